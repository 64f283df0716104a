"""Adam and AdamW against torch.optim in float64: the same parameters after 25 steps of an
MLP with BatchNorm, on every backend; their state survives a round trip."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet import backend
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch")
from tests.torch_reference import F, t, torch_copy  # noqa: E402

CASES = {
    "adam": (Adam, torch.optim.Adam, {}),
    "adam+l2+amsgrad": (Adam, torch.optim.Adam, {"weight_decay": 1e-2, "amsgrad": True}),
    "adamw": (AdamW, torch.optim.AdamW, {}),
    "adamw+amsgrad": (AdamW, torch.optim.AdamW, {"weight_decay": 0.1, "amsgrad": True}),
}


def _pairs(model, ref):
    """(xpnet array, torch tensor shaped alike, is a Linear bias followed by BatchNorm)."""
    linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
    bns = [m for m in ref if isinstance(m, torch.nn.BatchNorm1d)]
    for i, (layer, lin) in enumerate(zip(model.layers, linears, strict=True)):
        yield layer.W, lin.weight.detach().numpy(), False
        yield layer.b, lin.bias.detach().numpy()[:, None], i < len(model.bn_layers)
    for bn, tbn in zip(model.bn_layers, bns, strict=True):
        yield bn.BW, tbn.weight.detach().numpy()[None], False
        yield bn.Bb, tbn.bias.detach().numpy()[None], False


@pytest.mark.parametrize("case", CASES)
def test_25_steps_match_torch(xp, device, case):
    """Every parameter to 1e-10 relative, except a Linear bias followed by BatchNorm: its
    gradient is zero up to rounding (BatchNorm subtracts the batch mean, which removes
    any bias), and Adam divides by the root of its square, so it moves by amounts of
    order lr set by rounding noise: held to 1e-8, measured against the parameter's size."""
    ours, theirs, options = CASES[case]
    rng = np.random.default_rng(3)
    model = MLP([6, 9, 7, 4], batchnorm=True, xp=xp, device=device, dtype="float64", seed=2)
    ref = torch_copy(model)
    opt = ours(model, lr=0.01, **options)
    ref_opt = theirs(ref.parameters(), lr=0.01, **options)
    loss = CrossEntropyLoss()
    for _ in range(25):
        X, y = rng.standard_normal((16, 6)), rng.integers(0, 4, 16)
        L = loss.forward(model.forward(asarray(xp, device, X)), asarray(xp, device, y, "int64"))
        model.backward(loss.backward())
        opt.step()
        ref_opt.zero_grad()
        ref_L = F.cross_entropy(ref(t(X)), torch.tensor(y))
        ref_L.backward()
        ref_opt.step()
        assert_close(L, ref_L.item(), xp=xp, rtol=1e-10, atol=0)
    for mine, expected, noisy in _pairs(model, ref):
        got = backend.to_numpy(mine)
        scale = np.max(np.abs(expected))
        worst = np.max(np.abs(got - expected)) / scale
        assert worst <= (1e-8 if noisy else 1e-10), (case, worst, noisy)
    assert opt.t == 25


def test_state_round_trip_continues_identically(xp, device):
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((16, 5)))
    y = asarray(xp, device, rng.integers(0, 3, 16), "int64")
    loss = CrossEntropyLoss()

    def steps(model, opt, n):
        for _ in range(n):
            loss.forward(model.forward(X), y)
            model.backward(loss.backward())
            opt.step()

    a = MLP([5, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=1)
    opt_a = AdamW(a, lr=0.01, amsgrad=True)
    steps(a, opt_a, 6)
    b = MLP([5, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=1)
    opt_b = AdamW(b, lr=0.01, amsgrad=True)
    steps(b, opt_b, 3)
    saved = {k: backend.to_numpy(v).copy() for k, v in opt_b.state_dict().items()}
    params = {k: backend.to_numpy(v).copy() for k, v in b.state_dict().items()}
    c = MLP([5, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=9)
    c.load_state_dict(params)
    opt_c = AdamW(c, lr=0.01, amsgrad=True).load_state_dict(saved)
    assert opt_c.t == 3 and "max_exp_avg_sq.layers.0.W" in saved
    steps(c, opt_c, 3)
    for key, value in a.state_dict().items():
        assert_close(c.state_dict()[key], backend.to_numpy(value), xp=xp, rtol=0, atol=0)


_REFUSED = [
    ({"lr": 0}, ValueError, "lr must lie in (0.0, inf), got 0.0"),
    ({"eps": 0}, ValueError, "eps must lie in (0.0, inf), got 0.0"),
    ({"eps": float("nan")}, ValueError, "eps must lie in (0.0, inf), got nan"),
    ({"eps": "a"}, TypeError, "eps must be a number, got str 'a'"),
    ({"betas": (1.0, 0.9)}, ValueError, "betas[0] must lie in [0.0, 1.0), got 1.0"),
    ({"betas": (0.9, 1.0)}, ValueError, "betas[1] must lie in [0.0, 1.0), got 1.0"),
    ({"betas": (0.9, -0.1)}, ValueError, "betas[1] must lie in [0.0, 1.0), got -0.1"),
    ({"betas": 0.9}, TypeError, "betas must be a pair (beta1, beta2), got 0.9"),
    ({"betas": (0.9,)}, TypeError, "betas must be a pair (beta1, beta2), got (0.9,)"),
    ({"weight_decay": -1}, ValueError, "weight_decay must lie in [0.0, inf), got -1.0"),
    ({"amsgrad": 1}, TypeError, "amsgrad must be a bool, got 1"),
]


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize(("options", "kind", "says"), _REFUSED)
def test_each_hyperparameter_is_refused_by_name(cls, options, kind, says):
    """The whole message: the optimizer's own name, the argument, its range, the value."""
    with pytest.raises(kind) as info:
        cls(MLP([2, 2]), **options)
    assert str(info.value) == f"{cls.__name__}: {says}"


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_the_edges_of_each_range_are_accepted(cls):
    opt = cls(MLP([2, 2]), betas=(0.0, 0.0), eps=1e-300, weight_decay=0.0, amsgrad=True)
    assert (opt.betas, opt.eps, opt.weight_decay, opt.amsgrad) == ((0.0, 0.0), 1e-300, 0.0, True)


def test_a_step_before_backward_is_refused():
    with pytest.raises(RuntimeError, match=r"layers\.0\.dLdW is None"):
        Adam(MLP([2, 2])).step()


def test_a_state_without_its_step_count_is_refused_by_name():
    opt = AdamW(MLP([3, 4, 2]))
    state = opt.state_dict()
    del state["step"]
    with pytest.raises(ValueError, match=r"^AdamW\.load_state_dict: missing 'step'$"):
        opt.load_state_dict(state)


@pytest.mark.parametrize(
    "make", [lambda m: SGD(m, lr=0.1, momentum=0.9), Adam], ids=["SGD", "Adam"]
)
def test_a_loaded_state_is_checked_cast_and_owned(xp, device, make):
    """Each buffer by name, its shape, cast to the parameters' dtype, and copied: the
    state given stays the caller's (the optimizer updates its buffers in place)."""
    opt = make(MLP([3, 4, 2], xp=xp, device=device))  # float32
    name = type(opt).__name__
    state = {k: backend.to_numpy(v).astype(np.float64) + 0.5 for k, v in opt.state_dict().items()}
    buffer = next(k for k, v in state.items() if v.shape == (4, 3))
    missing = {k: v for k, v in state.items() if k != buffer}
    with pytest.raises(ValueError, match=rf"^{name}\.load_state_dict: missing buffer '{buffer}'$"):
        opt.load_state_dict(missing)
    wrong = {**state, buffer: np.zeros((3, 4))}
    shapes = r"has shape \(3, 4\), expected \(4, 3\)$"
    with pytest.raises(ValueError, match=rf"^{name}\.load_state_dict: '{buffer}' {shapes}"):
        opt.load_state_dict(wrong)
    opt.load_state_dict(state)  # float64 from the host
    loaded = opt.state_dict()[buffer]
    assert loaded.dtype == xp.float32 and backend.device(loaded) == backend.device(
        opt.params[0][1].value
    )
    np.testing.assert_allclose(backend.to_numpy(loaded), state[buffer], rtol=1e-6)
    if backend.library_name(xp) == "numpy":  # the same library and dtype: not converted
        mine = {k: v.astype(np.float32) for k, v in state.items()}
        opt.load_state_dict(mine)
        mine[buffer][...] = 0.0
        assert np.all(opt.state_dict()[buffer] != 0.0)


@pytest.mark.parametrize(("ours", "theirs"), [(Adam, "Adam"), (AdamW, "AdamW")])
def test_the_defaults_are_torch_s(ours, theirs):
    """Left out, every hyperparameter is PyTorch's (AdamW's weight decay is 1e-2, Adam's 0)."""
    opt = ours(MLP([2, 3], seed=0))
    expected = getattr(torch.optim, theirs)([torch.zeros(1, requires_grad=True)]).defaults
    got = {"lr": opt.lr, "betas": opt.betas, "eps": opt.eps,
           "weight_decay": opt.weight_decay, "amsgrad": opt.amsgrad}  # fmt: skip
    assert got == {k: expected[k] for k in got}


@pytest.mark.parametrize("amsgrad", [False, True])
def test_the_state_holds_what_the_variant_keeps(amsgrad):
    """The running maximum of amsgrad is kept (and saved) only when asked for."""
    model = MLP([2, 3], seed=0)
    names = [name for name, _ in model.named_parameters()]
    kept = ["exp_avg", "exp_avg_sq", *(["max_exp_avg_sq"] if amsgrad else [])]
    state = Adam(model, amsgrad=amsgrad).state_dict()
    assert sorted(state) == sorted(["step", *(f"{k}.{n}" for k in kept for n in names)])


def test_one_parameter_alone_is_optimised():
    """An optimizer over a single parameter, as ``torch.optim.Adam([w])``."""
    model = MLP([2, 3], seed=0)
    only = [next(iter(model.named_parameters()))]
    before = backend.to_numpy(model.layers[0].W).copy()
    loss = CrossEntropyLoss()
    loss.forward(model.forward(np.ones((4, 2), dtype=np.float32)), np.array([0, 1, 2, 0]))
    model.backward(loss.backward())
    Adam(only, lr=0.1).step()
    assert not np.array_equal(backend.to_numpy(model.layers[0].W), before)


def _three_adam_steps(xp, device, case):
    ours, _, options = CASES[case]
    model = MLP([5, 7, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=2)
    opt = ours(model, lr=0.01, **options)
    loss = CrossEntropyLoss()
    rng = np.random.default_rng(0)
    arrays = [p.value for _, p in model.named_parameters()]
    for _ in range(3):
        X = asarray(xp, device, rng.standard_normal((8, 5)))
        loss.forward(model.forward(X), asarray(xp, device, rng.integers(0, 3, 8), "int64"))
        model.backward(loss.backward())
        opt.step()
    kept = all(a is p.value for a, (_, p) in zip(arrays, model.named_parameters(), strict=True))
    return kept, {k: backend.to_numpy(v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", CASES)
def test_the_in_place_update_keeps_the_arrays_and_equals_the_assignment(
    xp, device, monkeypatch, case
):
    """Where the library's arrays can be written, Adam updates the parameters in place
    (a view of them stays valid, as in PyTorch), bit for bit as the assignment update
    that immutable libraries get."""
    if not backend.inplace_updates(xp):
        pytest.skip(f"{backend.library_name(xp)}'s arrays are not written in place")
    kept, in_place = _three_adam_steps(xp, device, case)
    monkeypatch.setattr(backend, "inplace_updates", lambda _xp: False)
    moved, assigned = _three_adam_steps(xp, device, case)
    assert kept and not moved
    for key, value in assigned.items():
        np.testing.assert_array_equal(in_place[key], value, err_msg=key)
