"""Learning-rate schedules equal PyTorch's, step for step, over 100 steps."""

from __future__ import annotations

import pytest

from xpnet.models import MLP
from xpnet.optim import SGD, Adam
from xpnet.optim import lr_scheduler as ours

torch = pytest.importorskip("torch")
theirs = torch.optim.lr_scheduler


def _optimizers(lr=0.1):
    model = MLP([3, 4, 2])
    param = torch.nn.Parameter(torch.zeros(2))
    return SGD(model, lr=lr), torch.optim.SGD([param], lr=lr)


SCHEDULES = {
    "step": lambda lib, o: lib.StepLR(o, step_size=7, gamma=0.5),
    "cosine": lambda lib, o: lib.CosineAnnealingLR(o, T_max=30, eta_min=1e-3),
    # past T_max the cosine turns back up, period after period (PyTorch's recursive form)
    "cosine-periods": lambda lib, o: lib.CosineAnnealingLR(o, T_max=12, eta_min=0.02),
    "linear": lambda lib, o: lib.LinearLR(o, start_factor=0.1, total_iters=10),
    "warmup+cosine": lambda lib, o: lib.SequentialLR(
        o,
        [lib.LinearLR(o, start_factor=0.1, total_iters=5), lib.CosineAnnealingLR(o, T_max=95)],
        milestones=[5],
    ),
    "warmup+step": lambda lib, o: lib.SequentialLR(
        o, [lib.LinearLR(o, start_factor=0.25, total_iters=4), lib.StepLR(o, 10)], milestones=[4]
    ),
    "linear-defaults": lambda lib, o: lib.LinearLR(o),
    # a cosine restarted at its milestone with a floor: the restart's rate is base_lr
    "warmup+cosine-floor": lambda lib, o: lib.SequentialLR(
        o,
        [
            lib.LinearLR(o, start_factor=0.1, total_iters=5),
            lib.CosineAnnealingLR(o, T_max=40, eta_min=0.03),
        ],
        milestones=[5],
    ),
    # a linear ramp as the second schedule: restarted at its milestone from start_factor
    "step+linear": lambda lib, o: lib.SequentialLR(
        o,
        [
            lib.StepLR(o, 2, gamma=0.5),
            lib.LinearLR(o, start_factor=0.3, end_factor=0.9, total_iters=6),
        ],
        milestones=[5],
    ),
    # three schedules, the first milestone at step 1
    "three": lambda lib, o: lib.SequentialLR(
        o,
        [
            lib.LinearLR(o, start_factor=0.5, total_iters=1),
            lib.StepLR(o, 3, gamma=0.5),
            lib.CosineAnnealingLR(o, T_max=20, eta_min=0.01),
        ],
        milestones=[1, 9],
    ),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_rates_equal_torch_for_100_steps(name):
    mine_opt, ref_opt = _optimizers()
    mine, ref = SCHEDULES[name](ours, mine_opt), SCHEDULES[name](theirs, ref_opt)
    got, expected = [mine_opt.lr], [ref_opt.param_groups[0]["lr"]]
    assert mine.get_last_lr() == ref.get_last_lr()[0]
    for _ in range(100):
        ref_opt.step()
        mine.step()
        ref.step()
        got.append(mine_opt.lr)
        expected.append(ref_opt.param_groups[0]["lr"])
        assert mine.get_last_lr() == mine_opt.lr
    assert got == expected  # the same formulas, so the same rounding
    assert len(set(got)) > 3


def test_state_round_trip():
    opt, _ = _optimizers()
    schedule = SCHEDULES["warmup+cosine"](ours, opt)
    for _ in range(12):
        schedule.step()
    state = schedule.state_dict()
    rates = []
    for _ in range(5):
        schedule.step()
        rates.append(opt.lr)
    fresh_opt, _ = _optimizers()
    fresh = SCHEDULES["warmup+cosine"](ours, fresh_opt).load_state_dict(state)
    assert fresh_opt.lr == state["lr"]
    resumed = []
    for _ in range(5):
        fresh.step()
        resumed.append(fresh_opt.lr)
    assert resumed == rates


def test_schedules_set_adam_too_and_check_arguments():
    model = MLP([3, 4, 2])
    opt = Adam(model, lr=0.01)
    ours.StepLR(opt, step_size=1, gamma=0.5).step()
    assert opt.lr == 0.005
    with pytest.raises(TypeError, match="expected an xpnet optimizer"):
        ours.StepLR(object(), 3)
    with pytest.raises(ValueError, match="milestones"):
        ours.SequentialLR(opt, [ours.StepLR(opt, 2)], milestones=[1])


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda o: ours.StepLR(o, step_size=0), ValueError, "StepLR: step_size must be positive"),
        (lambda o: ours.StepLR(o, 3, gamma=0.0), ValueError, "StepLR: gamma must lie in"),
        (
            lambda o: ours.LinearLR(o, start_factor=0.0),
            ValueError,
            "LinearLR: start_factor must lie in",
        ),
        (
            lambda o: ours.LinearLR(o, start_factor=1.5),
            ValueError,
            "LinearLR: start_factor must lie in",
        ),
        (lambda o: ours.LinearLR(o, end_factor=1.5), ValueError, "LinearLR: end_factor must lie"),
        (
            lambda o: ours.LinearLR(o, total_iters=0),
            ValueError,
            "LinearLR: total_iters must be positive",
        ),
        (
            lambda o: ours.CosineAnnealingLR(o, T_max=2.5),
            TypeError,
            "CosineAnnealingLR: T_max must be an int",
        ),
        (
            lambda o: ours.CosineAnnealingLR(o, T_max=5, eta_min=-1.0),
            ValueError,
            "CosineAnnealingLR: eta_min must lie",
        ),
    ],
)
def test_each_argument_is_checked_by_name(build, error, message):
    """Every schedule refuses a bad argument naming the schedule and the argument, at the
    boundary itself (a gamma or start factor of 0, a factor above 1)."""
    opt, _ = _optimizers()
    with pytest.raises(error, match="^" + message):
        build(opt)


def test_sequences_are_refused_by_name():
    opt, _ = _optimizers()
    other, _ = _optimizers()
    with pytest.raises(TypeError, match=r"^StepLR: expected an xpnet optimizer, got object"):
        ours.StepLR(object(), 3)
    refusal = r"^SequentialLR: expected at least one schedule, all created for this optimizer"
    with pytest.raises(ValueError, match=refusal):
        ours.SequentialLR(opt, [], milestones=[])
    with pytest.raises(ValueError, match=refusal):
        ours.SequentialLR(opt, [ours.StepLR(opt, 2), ours.StepLR(other, 2)], milestones=[3])
    with pytest.raises(ValueError, match=r"^SequentialLR: 3 schedules need 2 milestones, got 1"):
        ours.SequentialLR(opt, [ours.StepLR(opt, 2)] * 3, milestones=[3])
    alone = ours.SequentialLR(opt, [ours.StepLR(opt, 2, gamma=0.5)], milestones=[])
    alone.step(), alone.step()
    assert opt.lr == 0.05


def test_linear_end_factor_may_be_zero_not_below():
    opt, _ = _optimizers()
    ours.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=2).step()
    assert opt.lr == 0.05
    with pytest.raises(ValueError, match=r"^LinearLR: end_factor must lie in \[0\.0, 1\.0\]"):
        ours.LinearLR(opt, end_factor=-0.1)


def test_a_state_of_other_schedules_is_refused():
    opt, _ = _optimizers()
    two = SCHEDULES["warmup+cosine"](ours, opt).state_dict()
    other, _ = _optimizers()
    three = SCHEDULES["three"](ours, other)
    with pytest.raises(ValueError, match="zip"):
        three.load_state_dict(two)
