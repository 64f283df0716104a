"""The same rules for every module, checked module by module: a float input of another
precision is cast, a non-float one refused naming the module, arrays of another library
or device refused naming the module and both places, a wrong upstream gradient refused
naming the gradient (the activations' too), an input of the wrong shape refused naming
the module, the module's arrays made on its device, every declared cache None until
``forward`` and after ``to()``, and the losses' own refusals as whole messages.

Mutation testing showed that these rules were tested for Linear and MLP but not for
every layer (a new layer could drop its own arrays from the namespace check, or create
them on the default device, and no test noticed); these tests take each module in turn.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import other_library, strict_devices
from xpnet import backend
from xpnet.models import MLP, MLP0, MLP1, MLP4
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

# name -> (constructor, width of its input, width of its output, the name of dLdY)
MODULES = {
    "Linear": (lambda **kw: Linear(3, 2, **kw), 3, 2, "dLdZ"),
    "BatchNorm1d": (lambda **kw: BatchNorm1d(3, **kw), 3, 3, "dLdBZ"),
    "Standardize": (lambda **kw: Standardize(3, **kw), 3, 3, "dLdY"),
    "MLP": (lambda **kw: MLP([3, 4, 2], batchnorm=True, standardize=True, **kw), 3, 2, "dLdA"),
}


# the activations hold no parameters: they keep their input's library, device and dtype
# in forward, and their backward follows the same rules against the cached output
ACTIVATIONS = {
    cls.__name__: (lambda cls=cls, **kw: cls(), 3, 3, "dLdA")
    for cls in (Identity, Sigmoid, Tanh, ReLU, GELU, Softmax)
}


def _case(table, request, xp, device):
    make, n_in, n_out, grad_name = table[request.param]
    return request.param, make(xp=xp, device=device), n_in, n_out, grad_name


@pytest.fixture(params=list(MODULES))
def case(request, xp, device):
    return _case(MODULES, request, xp, device)


@pytest.fixture(params=list(MODULES) + list(ACTIVATIONS))
def any_case(request, xp, device):
    return _case({**MODULES, **ACTIVATIONS}, request, xp, device)


def _ones(xp, device, shape, dtype=None):
    return xp.ones(shape, dtype=dtype or xp.float32, device=device)


def test_the_arrays_are_made_on_the_modules_device(case, xp, device):
    _, module, _, _, _ = case
    want = backend.device_name(backend.resolve_device(xp, device)) if device else None
    for key, array in module.state_dict().items():
        assert backend.library_name(backend.namespace(array)) == backend.library_name(xp), key
        if want is not None:
            assert backend.device_name(backend.device(array)) == want, key


def test_a_float_input_of_another_precision_is_cast(case, xp, device):
    _, module, n_in, n_out, _ = case
    out = module.forward(_ones(xp, device, (4, n_in), xp.float64))
    assert out.dtype == xp.float32 and tuple(out.shape) == (4, n_out)
    assert backend.device(out) == backend.device(
        module.state_dict()[next(iter(module.state_dict()))]
    )


def test_a_non_float_input_is_refused_naming_the_module(case, xp, device):
    name, module, n_in, _, _ = case
    with pytest.raises(TypeError, match=rf"^{name}\(.*must be a floating array"):
        module.forward(xp.ones((4, n_in), dtype=xp.int32, device=device))


def test_a_non_array_is_refused_naming_the_module(any_case, xp, device):
    """A list as input or gradient: the whole message, labelled with the module (a module
    with arrays of its own must not skip the label on its way to compare placements)."""
    _, module, n_in, n_out, _ = any_case
    want = (
        f"{module._label()}: expected an array of an Array API library (NumPy, CuPy, "
        f"PyTorch, JAX, ...), got builtins.list; convert it first, e.g. with "
        f"xpnet.backend.get('numpy').asarray(data)"
    )
    with pytest.raises(TypeError) as info:
        module.forward([[1.0] * n_in] * 4)
    assert str(info.value) == want
    module.forward(_ones(xp, device, (4, n_in)))
    with pytest.raises(TypeError) as info:
        module.backward([[1.0] * n_out] * 4)
    assert str(info.value) == want


def _what(name):
    """What a module compares a call's arrays with: Standardize holds buffers only, and an
    activation holds no state but the output it cached."""
    if name in ACTIVATIONS:
        return "cached forward arrays"
    return "buffers" if name == "Standardize" else "parameters"


def _another_library(module, name, xp, other):
    lib, own = backend.library_name(other), backend.library_name(xp)
    return (
        f"{module._label()}: the input is from {lib} but the {_what(name)} are from {own}; "
        f"move the model with .to({lib!r}) or the data with "
        f"xpnet.backend.convert(data, {own!r})"
    )


def test_another_librarys_input_is_refused_naming_the_module(case, xp, device):
    name, module, n_in, _, _ = case
    other = other_library(xp)
    with pytest.raises(TypeError) as info:
        module.forward(other.ones((4, n_in), dtype=other.float32))
    assert str(info.value) == _another_library(module, name, xp, other)


def test_another_librarys_gradient_is_refused_naming_the_module(any_case, xp, device):
    name, module, n_in, n_out, _ = any_case
    other = other_library(xp)
    module.forward(_ones(xp, device, (4, n_in)))
    with pytest.raises(TypeError) as info:
        module.backward(other.ones((4, n_out), dtype=other.float32))
    assert str(info.value) == _another_library(module, name, xp, other)


def test_an_input_of_the_wrong_shape_is_refused_naming_the_module(case, xp, device):
    name, module, n_in, _, _ = case
    want = rf"expected input of shape \(N, {n_in}\), got shape \(4, {n_in + 1}\)$"
    with pytest.raises(ValueError, match=rf"^{name}\(.*\): {want}"):
        module.forward(_ones(xp, device, (4, n_in + 1)))
    with pytest.raises(
        ValueError, match=rf"^{name}\(.*\): expected input of shape .*\(4,\) \(batch"
    ):
        module.forward(_ones(xp, device, (4,)))


@pytest.mark.parametrize("name", [*MODULES, *ACTIVATIONS])
def test_another_devices_arrays_are_refused_naming_both(name):
    """An input (for a module with parameters) or a gradient on another device: the whole
    message, with both devices. On array-api-strict's devices in every session: the NumPy
    session, where the mutation runs happen, has one device only."""
    strict, here, there = strict_devices()
    make, n_in, n_out, _ = {**MODULES, **ACTIVATIONS}[name]
    module = make(xp=strict, device=here)
    want = (
        f"{module._label()}: the input is on device {backend.device_name(there)} but the "
        f"{_what(name)} are on {backend.device_name(here)}; move the model with "
        f".to(xp, device=...) or the data with xpnet.backend.convert(data, xp, device=...)"
    )
    if name in MODULES:
        with pytest.raises(ValueError) as info:
            module.forward(strict.ones((4, n_in), device=there))
        assert str(info.value) == want
    module.forward(strict.ones((4, n_in), device=here))
    with pytest.raises(ValueError) as info:
        module.backward(strict.ones((4, n_out), device=there))
    assert str(info.value) == want


def test_a_wrong_upstream_gradient_is_refused_naming_it(any_case, xp, device):
    name, module, n_in, n_out, grad_name = any_case
    module.forward(_ones(xp, device, (4, n_in)))
    with pytest.raises(ValueError, match=rf"^{name}\(.*\)\.backward: .*\b{grad_name}\b.* shape"):
        module.backward(_ones(xp, device, (4, n_out + 1)))
    with pytest.raises(
        TypeError, match=rf"^{name}\(.*\)\.backward: {grad_name} must be a floating"
    ):
        module.backward(xp.ones((4, n_out), dtype=xp.int32, device=device))


def test_backward_returns_the_modules_dtype_for_a_wider_gradient(any_case, xp, device):
    _, module, n_in, n_out, _ = any_case
    module.forward(_ones(xp, device, (4, n_in)))
    grad = module.backward(_ones(xp, device, (4, n_out), xp.float64))
    assert grad.dtype == xp.float32 and tuple(grad.shape) == (4, n_in)
    np.testing.assert_array_equal(np.isfinite(backend.to_numpy(grad)), True)


def _handout(name):
    from xpnet import models

    return lambda **kw: getattr(models, name)(**kw)


def _initialiser(name):
    from xpnet.nn import init

    return lambda **kw: getattr(init, name)((3, 2), **kw)


#: every constructor that takes ``device=``: a module (its ``state_dict``) or an array
_MADE_ON_A_DEVICE = {
    **{name: make for name, (make, *_) in MODULES.items()},
    **{name: _handout(name) for name in ("MLP0", "MLP1", "MLP4")},
    **{name: _initialiser(name) for name in ("kaiming_uniform", "kaiming_normal",
       "xavier_uniform", "xavier_normal", "zeros", "ones")},
}  # fmt: skip


@pytest.mark.parametrize("name", list(_MADE_ON_A_DEVICE))
def test_every_device_argument_is_honoured_in_every_session(name):
    """What each constructor makes is on the device asked for, array-api-strict's second
    one, in every session: the NumPy session, where the mutation runs happen, has one
    device only, so a ``device=`` dropped on the way would pass there."""
    strict, _, other = strict_devices()
    made = _MADE_ON_A_DEVICE[name](xp=strict, device=other)
    arrays = list(made.state_dict().values()) if hasattr(made, "state_dict") else [made]
    assert {backend.device(a) for a in arrays} == {other}
    assert {backend.namespace(a) for a in arrays} == {backend.get(strict)}


# every module class and how to make a small one
_EVERY_MODULE = {
    **{name: make for name, (make, *_) in {**MODULES, **ACTIVATIONS}.items()},
    "Dropout": lambda **kw: Dropout(0.5),
    "MSELoss": lambda **kw: MSELoss(),
    "CrossEntropyLoss": lambda **kw: CrossEntropyLoss(),
    **{cls.__name__: (lambda cls=cls, **kw: cls(**kw)) for cls in (MLP0, MLP1, MLP4)},
}


@pytest.mark.parametrize("name", list(_EVERY_MODULE))
def test_a_new_module_holds_no_forward_caches(name, xp, device):
    """Every cache a module declares is None until ``forward`` fills it (what ``backward``
    before ``forward`` and user code test for), and again after ``to()`` drops it."""
    module = _EVERY_MODULE[name](xp=xp, device=device)

    def caches():
        return {(type(m).__name__, c): getattr(m, c) for _, m in module.named_modules()
                for c in m.declared_caches}  # fmt: skip

    assert caches() and caches() == dict.fromkeys(caches())
    if name in MODULES or name in ACTIVATIONS:
        module.forward(_ones(xp, device, (4, MODULES.get(name, ACTIVATIONS.get(name))[1])))
        assert any(v is not None for v in caches().values())
        module.to(xp, device=device)
        assert caches() == dict.fromkeys(caches())


@pytest.mark.parametrize("loss_cls", [MSELoss, CrossEntropyLoss])
def test_a_loss_refuses_bad_predictions_naming_itself_and_them(loss_cls, xp, device):
    """The losses' own checks, each as its whole message: predictions ``A`` that are not
    floating or not a batch, and ``A`` and ``Y`` from two libraries."""
    loss, name = loss_cls(), loss_cls.__name__
    Y = _ones(xp, device, (4, 2))

    def refused(A, Y, kind):
        with pytest.raises(kind) as info:
            loss.forward(A, Y)
        return str(info.value)

    assert refused(xp.ones((4, 2), dtype=xp.int32, device=device), Y, TypeError) == (
        f"{name}(): A must be a floating array (float32 or float64), got dtype "
        f"{xp.ones(1, dtype=xp.int32).dtype}; convert it with xp.astype(x, xp.float32)"
    )
    assert refused(_ones(xp, device, (4,)), _ones(xp, device, (4,)), ValueError) == (
        f"{name}(): expected A of shape (N, C), got shape (4,) (batch first; reshape a single "
        "sample to (1, C))"
    )
    other = other_library(xp)
    message = refused(_ones(xp, device, (4, 2)), other.ones((4, 2)), TypeError)
    assert message.startswith(f"{name}(): A and Y must be arrays of one library on one device: ")


_INTEGER_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@pytest.mark.parametrize("dtype", _INTEGER_DTYPES)
@pytest.mark.parametrize("library", ["session", "array_api_strict"])
def test_cross_entropy_takes_labels_of_every_integer_dtype(dtype, library, xp, device):
    """Class labels of any integer dtype give the int64 labels' loss, in the session's
    library and in array-api-strict, which refuses to compare uint64 with int64 (so the
    classes the labels are compared with must take the labels' dtype)."""
    if library != "session":
        xp, device = backend.get(library), None
    if not hasattr(xp, dtype):
        pytest.skip(f"{backend.library_name(xp)} has no {dtype}")
    A = xp.asarray([[0.5, -1.0, 2.0], [1.0, 0.0, -2.0]], device=device)
    want = CrossEntropyLoss().forward(A, xp.asarray([2, 0], dtype=xp.int64, device=device))
    got = CrossEntropyLoss().forward(A, xp.asarray([2, 0], dtype=getattr(xp, dtype), device=device))
    assert float(got) == float(want)
