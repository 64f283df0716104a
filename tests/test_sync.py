"""The training step reads nothing back from its arrays: labels are checked once per
dataset, and the step losses are read back every ``check_every`` steps, which is how
``fit`` runs on a GPU (where reading a value waits for the device). On the CPU this is
tested by counting every conversion of an array to a Python number or a host array."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray
from xpnet import backend
from xpnet.callbacks import LambdaCallback
from xpnet.errors import TrainingDiverged
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD
from xpnet.train import fit


@pytest.fixture
def reads(monkeypatch):
    """Count host reads: float/int/bool of an array (array-api-strict's array class) and
    xpnet.backend.to_numpy."""
    import array_api_strict

    counter = {"n": 0}
    cls = type(array_api_strict.asarray(0.0))
    for name in ("__float__", "__int__", "__bool__", "__index__"):
        original = getattr(cls, name)

        def counted(self, _original=original):
            counter["n"] += 1
            return _original(self)

        monkeypatch.setattr(cls, name, counted)
    to_numpy = backend.to_numpy

    def counted_to_numpy(x):
        counter["n"] += 1
        return to_numpy(x)

    monkeypatch.setattr(backend, "to_numpy", counted_to_numpy)
    return counter


def _problem(xp, n=256, seed=0):
    rng = np.random.default_rng(seed)
    X = xp.asarray(rng.standard_normal((n, 6)))
    y = xp.asarray(rng.integers(0, 3, n))
    return X, y


@pytest.mark.parametrize("batchnorm", [False, True])
def test_steps_read_back_once_per_window(reads, batchnorm):
    pytest.importorskip("array_api_strict")
    xp = backend.get("array_api_strict")
    X, y = _problem(xp)
    model = MLP([6, 16, 3], batchnorm=batchnorm, xp=xp, dtype="float64")
    opt = SGD(model, lr=0.05, momentum=0.9)
    reads["n"] = 0
    history = fit(
        model, CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=8, check_every=16,
        progress=False,
    )  # fmt: skip
    steps = 256 // 8
    # per epoch: 2 windows of 16 steps (one read each), the epoch's accuracy (one read);
    # once: the label check (two reads)
    assert reads["n"] == 2 + 2 * (2 + 1), reads["n"]
    assert len(history) == 2 and steps == 32
    reads["n"] = 0
    fit(model, CrossEntropyLoss(), opt, (X, y), epochs=1, batch_size=8, check_every=1)
    assert reads["n"] == 2 + steps + 1  # the host default: every step's loss, before its update


def test_deferred_checks_train_the_same(xp, device):
    """Reading the losses back later changes nothing in the numbers."""
    X, y = _problem(xp)
    X = asarray(xp, device, backend.to_numpy(X))
    y = asarray(xp, device, backend.to_numpy(y), "int64")
    results = []
    for check_every in (1, 7):
        model = MLP([6, 16, 3], batchnorm=True, xp=xp, device=device, dtype="float64")
        opt = SGD(model, lr=0.05, momentum=0.9)
        history = fit(
            model, CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=8,
            check_every=check_every,
        )  # fmt: skip
        results.append((history, {k: backend.to_numpy(v) for k, v in model.state_dict().items()}))
    (h1, s1), (h7, s7) = results
    assert [r["loss"] for r in h1] == [r["loss"] for r in h7]
    assert [r["accuracy"] for r in h1] == [r["accuracy"] for r in h7]
    for key in s1:
        np.testing.assert_array_equal(s1[key], s7[key], err_msg=key)


class _PoisonedLoss(CrossEntropyLoss):
    """Cross-entropy whose ``at``-th call returns NaN."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward_unchecked(self, A, Y, xp):
        self.calls += 1
        value = super().forward_unchecked(A, Y, xp)
        return value * float("nan") if self.calls == self.at else value


@pytest.mark.parametrize("check_every", [1, 5, 50])
def test_a_non_finite_loss_is_named_by_its_step(check_every):
    xp = backend.get("numpy")
    X, y = _problem(xp)
    model = MLP([6, 16, 3], xp=xp, dtype="float64")
    saved = []
    loss = _PoisonedLoss(at=32 + 13)  # epoch 2 (32 steps per epoch), step 13
    with pytest.raises(TrainingDiverged, match="epoch 2, step 13") as info:
        fit(
            model, loss, SGD(model, lr=0.05), (X, y), epochs=3, batch_size=8,
            check_every=check_every,
            callbacks=[LambdaCallback(on_epoch_end=lambda m, s, r: saved.append(s.epoch))],
        )  # fmt: skip
    assert (info.value.epoch, info.value.step) == (2, 13) and saved == [1]
    if check_every == 1:  # on the host's default, the poisoned step updated nothing
        assert all(np.all(np.isfinite(p)) for p in model.parameters())


def test_labels_are_checked_once_before_training():
    xp = backend.get("numpy")
    X, y = _problem(xp)
    y[5] = 3
    model = MLP([6, 16, 3], xp=xp)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\).*from 0 to 3"):
        fit(model, CrossEntropyLoss(), SGD(model), (X, y), epochs=1, batch_size=8)


def test_on_host():
    assert backend.on_host(np.zeros(2))
    torch = pytest.importorskip("torch")
    assert backend.on_host(torch.zeros(2))
