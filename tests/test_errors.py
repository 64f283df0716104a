"""Bad input gets a clear exception at the call that received it (docs: the contract)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, other_library
from xpnet import backend
from xpnet.models import MLP, MLP0
from xpnet.nn import (
    GELU,
    BatchNorm1d,
    CrossEntropyLoss,
    Dropout,
    Identity,
    Linear,
    MSELoss,
    ReLU,
    Sigmoid,
    Softmax,
    Standardize,
    Tanh,
)
from xpnet.optim import SGD, Adam, AdamW

ACTIVATIONS = [Identity, Sigmoid, Tanh, ReLU, GELU, Softmax]


def test_linear_wrong_ndim(xp, device):
    layer = Linear(2, 3, xp=xp, device=device)
    for shape in [(2,), (1, 4, 2)]:
        with pytest.raises(ValueError, match=r"expected input of shape \(N, 2\), got shape"):
            layer.forward(xp.zeros(shape, dtype=xp.float32, device=device))


def test_linear_wrong_features(xp, device):
    layer = Linear(2, 3, xp=xp, device=device)
    with pytest.raises(ValueError, match=r"Linear\(in_features=2.*\(N, 2\), got shape \(4, 5\)"):
        layer.forward(xp.zeros((4, 5), dtype=xp.float32, device=device))


def test_empty_batch(xp, device):
    with pytest.raises(ValueError, match="empty batch"):
        Linear(2, 3, xp=xp, device=device).forward(xp.zeros((0, 2), device=device))


@pytest.mark.parametrize(
    "make",
    [
        lambda xp, d: Linear(2, 3, xp=xp, device=d),
        lambda xp, d: BatchNorm1d(2, xp=xp, device=d),
        lambda xp, d: MLP([2, 3], xp=xp, device=d),
        *[lambda xp, d, c=c: c() for c in ACTIVATIONS],
    ],
    ids=["Linear", "BatchNorm1d", "MLP", *[c.__name__ for c in ACTIVATIONS]],
)
def test_non_float_input(xp, device, make):
    module = make(xp, device)
    x = xp.ones((4, 2), dtype=xp.int32, device=device)
    with pytest.raises(TypeError) as info:
        module.forward(x)
    assert str(info.value) == (
        f"{module._label()}: input must be a floating array (float32 or float64), got dtype "
        f"{x.dtype}; convert it with xp.astype(x, xp.float32)"
    )


@pytest.mark.parametrize("loss_cls", [MSELoss, CrossEntropyLoss])
def test_loss_non_float_logits(xp, device, loss_cls):
    with pytest.raises(TypeError, match="floating"):
        loss_cls().forward(
            xp.ones((4, 2), dtype=xp.int64, device=device),
            xp.ones((4, 2), dtype=xp.float32, device=device),
        )


@pytest.mark.parametrize(
    ("make", "call"),
    [
        (lambda xp, d: Linear(2, 3, xp=xp, device=d), lambda m, x: m.backward(x)),
        (lambda xp, d: BatchNorm1d(2, xp=xp, device=d), lambda m, x: m.backward(x)),
        (lambda xp, d: MLP([2, 3], xp=xp, device=d), lambda m, x: m.backward(x)),
        (lambda xp, d: MSELoss(), lambda m, x: m.backward()),
        (lambda xp, d: CrossEntropyLoss(), lambda m, x: m.backward()),
        *[(lambda xp, d, c=c: c(), lambda m, x: m.backward(x)) for c in ACTIVATIONS],
        *[(lambda xp, d, c=c: c(), lambda m, x: m.backward()) for c in ACTIVATIONS],
    ],
)
def test_backward_before_forward(xp, device, make, call):
    module = make(xp, device)
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        call(module, xp.ones((4, 2), dtype=xp.float32, device=device))


def test_softmax_needs_a_batch(xp, device):
    """Softmax normalises over axis 1, so unlike the elementwise activations it needs (N, C)."""
    with pytest.raises(ValueError) as info:
        Softmax().forward(xp.ones((3,), device=device))
    assert str(info.value) == (
        "Softmax(): expected input of shape (N, C), got shape (3,) (batch first; reshape a "
        "single sample to (1, C))"
    )


def test_softmax_backward_needs_upstream(xp, device):
    f = Softmax()
    f.forward(xp.ones((2, 3), device=device))
    with pytest.raises(TypeError, match="needs dLdA"):
        f.backward()


def test_backward_wrong_shape(xp, device):
    layer = Linear(2, 3, xp=xp, device=device)
    layer.forward(xp.ones((4, 2), device=device))
    with pytest.raises(ValueError, match=r"dLdZ of shape \(N, 3\)"):
        layer.backward(xp.ones((4, 2), device=device))
    with pytest.raises(ValueError, match="3 rows but the forward batch had 4"):
        layer.backward(xp.ones((3, 3), device=device))
    f = ReLU()
    f.forward(xp.ones((4, 2), device=device))
    with pytest.raises(ValueError, match=r"dLdA must have shape \(4, 2\), got \(4, 3\)"):
        f.backward(xp.ones((4, 3), device=device))


def test_mse_shape_mismatch(xp, device):
    with pytest.raises(ValueError, match=r"same shape, got A \(4, 2\) and Y \(4, 3\)"):
        MSELoss().forward(xp.ones((4, 2), device=device), xp.ones((4, 3), device=device))


def test_cross_entropy_shape_mismatch(xp, device):
    A = xp.ones((4, 3), device=device)
    with pytest.raises(ValueError, match=r"matching A \(4, 3\), got shape \(4, 2\)"):
        CrossEntropyLoss().forward(A, xp.ones((4, 2), device=device))
    with pytest.raises(ValueError, match="3 labels for 4 rows"):
        CrossEntropyLoss().forward(A, asarray(xp, device, [0, 1, 2], "int64"))
    with pytest.raises(ValueError, match=r"expected A of shape \(N, C\)"):
        CrossEntropyLoss().forward(
            xp.ones((4,), device=device), asarray(xp, device, [0] * 4, "int64")
        )


@pytest.mark.parametrize("labels", [[0, 1, 3, 2], [0, -1, 1, 2]])
def test_labels_out_of_range(xp, device, labels):
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        CrossEntropyLoss().forward(
            xp.ones((4, 3), device=device), asarray(xp, device, labels, "int64")
        )


def test_float_labels_rejected(xp, device):
    with pytest.raises(TypeError, match="integer class labels"):
        CrossEntropyLoss().forward(
            xp.ones((4, 3), device=device), asarray(xp, device, [0.0, 1.0, 2.0, 1.0])
        )


def test_mixed_libraries_in_a_loss(xp, device):
    """(Every module's refusal of another library's arrays is in test_module_contract.py.)"""
    other = other_library(xp)
    with pytest.raises(TypeError, match="two libraries"):
        CrossEntropyLoss().forward(xp.ones((4, 2), device=device), other.ones((4, 2)))


def test_batchnorm_batch_of_one(xp, device):
    bn = BatchNorm1d(3, xp=xp, device=device)
    one = xp.ones((1, 3), device=device)
    with pytest.raises(ValueError, match="at least 2 rows"):
        bn.forward(one)
    assert tuple(bn.forward(one, eval=True).shape) == (1, 3)
    model = MLP([3, 4, 2], batchnorm=True, xp=xp, device=device)
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.forward(one)
    assert tuple(model.eval().forward(one).shape) == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"lr": 0.0}, ValueError, r"lr must lie in \(0.0, inf\)"),
        ({"lr": -1.0}, ValueError, "lr must lie"),
        ({"lr": float("nan")}, ValueError, "lr must lie"),
        ({"lr": "0.1"}, TypeError, "lr must be a number"),
        ({"momentum": 1.0}, ValueError, r"momentum must lie in \[0.0, 1.0\)"),
        ({"momentum": -0.1}, ValueError, "momentum must lie"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must lie"),
        ({"nesterov": True}, ValueError, "nesterov momentum needs momentum > 0"),
        ({"nesterov": 1, "momentum": 0.9}, TypeError, "nesterov must be a bool"),
    ],
)
def test_sgd_hyperparameters(xp, device, kwargs, exc, match):
    model = MLP([2, 3], xp=xp, device=device)
    with pytest.raises(exc, match=match):
        SGD(model, **kwargs)


@pytest.mark.parametrize("opt_cls", [SGD, Adam, AdamW], ids=lambda c: c.__name__)
def test_every_optimizer_names_itself_in_its_refusals(opt_cls):
    """What every optimizer inherits (finding the parameters, the step's checks), each
    refusal as its whole message, naming the optimizer that refused."""
    name = opt_cls.__name__

    def refused(call, kind):
        with pytest.raises(kind) as info:
            call()
        return str(info.value)

    assert refused(lambda: opt_cls(42), TypeError) == (
        f"{name}: expected a model, an object with a 'layers' list, or an iterable of "
        "parameters (model.named_parameters()), got int"
    )
    assert refused(lambda: opt_cls([np.zeros(3)]), TypeError) == (
        f"{name}: parameter 0 must be an xpnet.nn.Param or a (name, Param) pair as "
        "named_parameters() yields, got ndarray"
    )
    param = next(iter(MLP([2, 3]).named_parameters()))[1]
    for not_a_pair in (("W", param, "extra"), ["W", param]):  # a pair is a 2-tuple
        assert refused(lambda item=not_a_pair: opt_cls([item]), TypeError) == (
            f"{name}: parameter 0 must be an xpnet.nn.Param or a (name, Param) pair as "
            f"named_parameters() yields, got {type(not_a_pair).__name__}"
        )
    assert refused(lambda: opt_cls([]), ValueError) == (
        f"{name}: list has no parameters to optimise; pass a model with layers or a "
        "non-empty iterable of parameters"
    )
    handout_style = type("PseudoModel", (), {"layers": [1]})()
    assert refused(lambda: opt_cls(handout_style), TypeError) == (
        f"{name}: model.layers[0] (1) is not an xpnet layer with parameters"
    )
    model = MLP([2, 3])
    after = "is None; call model.backward(...) before step()"
    assert refused(opt_cls(model).step, RuntimeError) == f"{name}.step(): layers.0.dLdW {after}"
    handles = [p for _, p in model.named_parameters()]  # named 0, 1: no module in the name
    assert refused(opt_cls(handles).step, RuntimeError) == f"{name}.step(): dLdW {after}"
    opt = opt_cls(model)
    model.to("array_api_strict")
    loss = CrossEntropyLoss()
    strict = backend.get("array_api_strict")
    loss.forward(model.forward(strict.ones((2, 2))), strict.asarray([0, 1]))
    model.backward(loss.backward())
    message = refused(opt.step, TypeError)
    assert message.startswith(
        f"{name}.step(): the model's parameters and this optimizer's buffers live apart ("
    )
    assert message.endswith("); create the optimizer after moving the model with .to()")


_SIZES = "sizes must be a sequence of at least two layer widths [C_in, ..., C_out], got"
_BACKENDS = "numpy, cupy, torch, array_api_strict, jax or the module name of an Array API library"
_MLP23 = "MLP(sizes=[2, 3], activation='relu', batchnorm=False)"


@pytest.mark.parametrize(
    ("build", "exc", "says"),
    [
        (lambda: Linear(0, 3), ValueError, "Linear: in_features must be positive, got 0"),
        (lambda: Linear(2, 0), ValueError, "Linear: out_features must be positive, got 0"),
        (lambda: Linear(2.5, 3), TypeError, "Linear: in_features must be an int, got float 2.5"),
        (lambda: Linear(True, 3), TypeError, "Linear: in_features must be an int, got bool True"),
        (lambda: Linear(2, 3, dtype="int32"), ValueError,
         "Linear: dtype must be one of float32, float64, got 'int32'"),
        (lambda: Linear(2, 3, xp="nosuchlib"), ValueError,
         f"Linear: unknown backend 'nosuchlib': no module of that name is installed; expected "
         f"one of {_BACKENDS}"),
        (lambda: Linear(2, 3, device="cuda"), ValueError,
         "Linear: NumPy arrays live on 'cpu' only, got device 'cuda'"),
        (lambda: BatchNorm1d(3, dtype="float16"), ValueError,
         "BatchNorm1d: dtype must be one of float32, float64, got 'float16'"),
        (lambda: Standardize(3, device="cuda"), ValueError,
         "Standardize: NumPy arrays live on 'cpu' only, got device 'cuda'"),
        (lambda: MLP([2, 3], xp="nosuchlib"), ValueError,
         f"MLP: unknown backend 'nosuchlib': no module of that name is installed; expected one "
         f"of {_BACKENDS}"),
        (lambda: MLP([2, 3]).to("numpy", dtype="int8"), ValueError,
         f"{_MLP23}.to(): dtype must be one of float32, float64, got 'int8'"),
        (lambda: MLP([2, 3]).to("nosuchlib"), ValueError,
         f"{_MLP23}.to(): unknown backend 'nosuchlib': no module of that name is installed; "
         f"expected one of {_BACKENDS}"),
        (lambda: MLP([2, 3]).to("numpy", device="gpu"), ValueError,
         f"{_MLP23}.to(): NumPy arrays live on 'cpu' only, got device 'gpu'"),
        (lambda: BatchNorm1d(0), ValueError, "BatchNorm1d: num_features must be positive, got 0"),
        (lambda: BatchNorm1d(3, alpha=1.5), ValueError,
         "BatchNorm1d: alpha must lie in [0.0, 1.0], got 1.5"),
        (lambda: BatchNorm1d(3, eps=0.0), ValueError,
         "BatchNorm1d: eps must lie in (0.0, inf), got 0.0"),
        (lambda: Dropout(1.0), ValueError, "Dropout: p must lie in [0.0, 1.0), got 1.0"),
        (lambda: Dropout(-0.1), ValueError, "Dropout: p must lie in [0.0, 1.0), got -0.1"),
        (lambda: Standardize(0), ValueError, "Standardize: num_features must be positive, got 0"),
        (lambda: MLP([3]), ValueError, f"MLP: {_SIZES} [3]"),
        (lambda: MLP("3,4"), ValueError, f"MLP: {_SIZES} '3,4'"),
        (lambda: MLP([3, -4]), ValueError, "MLP: sizes[1] must be positive, got -4"),
        (lambda: MLP([3, 4], activation="swish"), ValueError,
         "MLP: unknown activation 'swish'; expected one of relu, sigmoid, tanh, gelu, identity"),
        (lambda: MLP([3, 4], init="he"), ValueError,
         "MLP: unknown init 'he'; expected default or one of kaiming_uniform, kaiming_normal, "
         "xavier_uniform, xavier_normal"),
        (lambda: MLP([3, 4], dropout=1.0), ValueError,
         "MLP: dropout must lie in [0.0, 1.0), got 1.0"),
        (lambda: MLP([3, 4], dropout=-0.1), ValueError,
         "MLP: dropout must lie in [0.0, 1.0), got -0.1"),
        (lambda: MLP0(dtype="float16"), ValueError,
         "MLP0: dtype must be one of float32, float64, got 'float16'"),
        (lambda: SGD(MLP([2, 2]), lr=0), ValueError, "SGD: lr must lie in (0.0, inf), got 0.0"),
        (lambda: SGD(MLP([2, 2]), lr=float("inf")), ValueError,
         "SGD: lr must lie in (0.0, inf), got inf"),
        (lambda: SGD(MLP([2, 2]), lr=float("nan")), ValueError,
         "SGD: lr must lie in (0.0, inf), got nan"),
        (lambda: SGD(MLP([2, 2]), weight_decay=float("-inf")), ValueError,
         "SGD: weight_decay must lie in [0.0, inf), got -inf"),
        (lambda: SGD(MLP([2, 2]), momentum=1.0), ValueError,
         "SGD: momentum must lie in [0.0, 1.0), got 1.0"),
        (lambda: SGD(MLP([2, 2]), momentum=-0.5), ValueError,
         "SGD: momentum must lie in [0.0, 1.0), got -0.5"),
        (lambda: SGD(MLP([2, 2]), weight_decay=-1), ValueError,
         "SGD: weight_decay must lie in [0.0, inf), got -1.0"),
        (lambda: SGD(MLP([2, 2]), momentum=0.9, nesterov=1), TypeError,
         "SGD: nesterov must be a bool, got 1"),
        (lambda: SGD(MLP([2, 2]), nesterov=True), ValueError,
         "SGD: nesterov momentum needs momentum > 0"),
    ],
)  # fmt: skip
def test_constructor_arguments(build, exc, says):
    """Each refusal as its whole message: the class, the argument, its range, the value."""
    with pytest.raises(exc) as info:
        build()
    assert str(info.value) == says


def test_the_edges_of_the_constructors_ranges_are_accepted():
    bn = BatchNorm1d(3, alpha=0.0, eps=1e-300)
    assert (bn.alpha, bn.eps, BatchNorm1d(3, alpha=1.0).alpha) == (0.0, 1e-300, 1.0)
    assert Dropout(0.0).p == 0.0
    opt = SGD(MLP([2, 2]), lr=1e-300, momentum=0.0, weight_decay=0.0)
    assert (opt.lr, opt.mu, opt.weight_decay) == (1e-300, 0.0, 0.0)


def test_unknown_device_name():
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="unknown array_api_strict device 'gpu7'"):
        Linear(2, 3, xp="array_api_strict", device="gpu7")


def test_load_state_dict_errors(xp, device):
    """Each refusal as its whole message, naming the class."""
    model = MLP([2, 3, 2], xp=xp, device=device)

    def refused(state, kind=ValueError, **options):
        with pytest.raises(kind) as info:
            model.load_state_dict(state, **options)
        return str(info.value)

    state = dict(model.state_dict())
    del state["layers.1.b"]
    state["layers.9.W"] = np.zeros((1, 1), dtype=np.float32)
    assert refused(state) == (
        "MLP.load_state_dict: missing keys ['layers.1.b'], unexpected keys ['layers.9.W']; "
        "was the state saved from another architecture?"
    )
    # either one alone is refused too
    state = dict(model.state_dict())
    del state["layers.0.W"]
    assert refused(state).startswith("MLP.load_state_dict: missing keys ['layers.0.W'], unexp")
    state = {**model.state_dict(), "extra": np.zeros(1, dtype=np.float32)}
    assert refused(state).startswith("MLP.load_state_dict: missing keys [], unexpected keys ['e")
    state = dict(model.state_dict())
    state["layers.0.W"] = np.zeros((4, 2), dtype=np.float32)
    assert refused(state) == "MLP.load_state_dict: 'layers.0.W' has shape (4, 2), expected (3, 2)"
    assert refused([1, 2], TypeError) == (
        "MLP.load_state_dict expects a mapping of keys to arrays (as state_dict() returns), "
        "got list"
    )
    assert refused({"layers.0.b": [0.0, 0.0, 0.0]}, TypeError, strict=False) == (
        "MLP.load_state_dict: 'layers.0.b' must be an array, got list; expected an array of "
        "any supported library"
    )


def test_load_state_dict_not_strict_loads_every_key_it_knows(xp, device):
    """``strict=False`` skips keys the module does not have, wherever they come, and loads
    the others."""
    model = MLP([2, 3, 2], xp=xp, device=device)
    state = {"nothing.here": np.ones((1,), dtype=np.float32)}
    state.update(
        {k: np.full(v.shape, 0.5, dtype=np.float32) for k, v in model.state_dict().items()}
    )
    model.load_state_dict(state, strict=False)
    assert all(np.all(backend.to_numpy(v) == 0.5) for v in model.state_dict().values())


def test_sgd_after_moving_the_model(xp, device):
    other = other_library(xp)
    model = MLP([2, 3], xp=xp, device=device)
    opt = SGD(model)
    model.to(backend.library_name(other))
    X = other.ones((4, 2), dtype=other.float32)
    loss = CrossEntropyLoss()
    loss.forward(model.forward(X), other.asarray([0, 1, 2, 0]))
    model.backward(loss.backward())
    with pytest.raises(TypeError, match=r"create the optimizer after moving the model"):
        opt.step()


def test_one_error_hierarchy():
    """Every xpnet error is an XpnetError and also the builtin a Python user catches."""
    import xpnet.errors as errors

    builtins = (TypeError, ValueError, RuntimeError, FileNotFoundError, ModuleNotFoundError)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.XpnetError), name
        assert name == "XpnetError" or issubclass(cls, builtins), name


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda: Linear(2, 3).forward(np.ones((4, 5), dtype=np.float32)), ValueError),
        (lambda: Linear(2, 3).forward(np.ones((4, 2), dtype=np.int64)), TypeError),
        (lambda: Linear(2, 3).backward(np.ones((4, 3))), RuntimeError),
        (lambda: Linear(2.5, 3), TypeError),
        (lambda: backend.get("nosuchlib"), ValueError),
        (lambda: backend.namespace(np.ones(2), [1.0]), TypeError),
    ],
)
def test_library_errors_are_xpnet_errors(call, builtin):
    from xpnet.errors import XpnetError

    with pytest.raises(builtin) as info:
        call()
    assert isinstance(info.value, XpnetError)


def test_cli_shows_a_traceback_for_a_bug(monkeypatch):
    """User errors become one line (tested in test_cli.py); a bug is not disguised."""
    from xpnet.app import cli

    def broken(args):
        raise KeyError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["info"])


# -- messages and casts that mutation testing found unguarded -------------------------------
def test_softmax_backward_without_a_gradient_says_why(xp, device):
    layer = Softmax()
    layer.forward(asarray(xp, device, np.ones((2, 3)), dtype="float32"))
    with pytest.raises(TypeError, match=r"^Softmax\.backward\(\) needs dLdA: its Jacobian is "
                       r"not elementwise, so there is no dA/dZ array to return; call "
                       r"backward\(dLdA\)$"):  # fmt: skip
        layer.backward()


def test_linear_backward_with_another_batch_names_both_sizes(xp, device):
    layer = Linear(3, 2, xp=xp, device=device)
    layer.forward(asarray(xp, device, np.ones((4, 3)), dtype="float32"))
    with pytest.raises(ValueError, match=r"dLdZ has 5 rows but the forward batch had 4$"):
        layer.backward(asarray(xp, device, np.ones((5, 2)), dtype="float32"))


def test_an_input_of_the_parameters_dtype_is_kept_as_given_and_another_is_cast(xp, device):
    layer = Linear(2, 3, xp=xp, device=device)
    A = asarray(xp, device, np.ones((4, 2)), dtype="float32")
    layer.forward(A)
    assert layer.A is A
    layer.forward(asarray(xp, device, np.ones((4, 2)), dtype="float64"))
    assert layer.A.dtype == xp.float32


def test_mse_casts_targets_of_another_precision(xp, device):
    A = asarray(xp, device, [[1.0, 2.0], [3.0, 4.0]], dtype="float32")
    Y = asarray(xp, device, [[0.0, 2.0], [3.0, 2.0]], dtype="float64")
    L = MSELoss().forward(A, Y)
    assert float(L) == pytest.approx(5.0 / 4)


@pytest.mark.parametrize("loss", [MSELoss, CrossEntropyLoss])
def test_the_unchecked_losses_cast_float_targets_too(xp, device, loss):
    """``forward_unchecked`` (the training step's) takes targets of another precision as
    ``forward`` does: one-hot or real targets in float64 against float32 outputs."""
    A = asarray(xp, device, [[1.0, 2.0], [3.0, -4.0]], dtype="float32")
    Y = asarray(xp, device, [[0.0, 1.0], [1.0, 0.0]], dtype="float64")
    checked = loss().forward(A, Y)
    unchecked = loss().forward_unchecked(A, Y, xp)
    assert unchecked.dtype == checked.dtype == xp.float32
    assert float(unchecked) == float(checked)
