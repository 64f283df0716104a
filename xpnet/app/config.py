"""A run's configuration: the options that define it, their defaults and their checks.

``xpnet train`` builds a configuration from its options (:func:`new_config`) or reads a
resumed run's back (:func:`resumed_config`, :func:`config_of_run`, which checks every
field before it is used); :func:`make_optimizer` and :func:`make_scheduler` turn one into
objects.
"""

from __future__ import annotations

import math
from pathlib import Path

from .. import backend
from .._io import host_memory_bytes
from ..checkpoint import read_metadata
from ..compiled import compile_refusal
from ..data import SCALINGS, is_builtin
from ..errors import RunError, XpnetValueError
from ..models import ACTIVATIONS, MLP
from ..optim import OPTIMIZERS
from ..optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR, StepLR
from ..step import cuda_graph_refusal
from .folders import RESUME_FILE

__all__ = [
    "LEARNING_RATES",
    "OPTIMIZER_BUFFERS",
    "RUN_DEFAULTS",
    "RUN_OPTIONS",
    "SCHEDULES",
    "WEIGHT_DECAYS",
    "UsageError",
    "check_model_fits",
    "config_of_run",
    "make_optimizer",
    "make_scheduler",
    "namespace",
    "new_config",
    "pick_backend",
    "resumed_config",
]

#: ``xpnet train`` options that define a run; with ``--resume`` the saved ones are used.
RUN_OPTIONS = (
    "dataset",
    "label_column",
    "scale",
    "hidden",
    "activation",
    "batchnorm",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "dropout",
    "early_stopping",
    "backend",
    "device",
    "dtype",
    "seed",
    "tf32",
    "cuda_graph",
    "jit",
)
#: Their defaults (the parser's defaults are None, so that a given option can be told apart).
RUN_DEFAULTS = {
    "dataset": "digits",
    "label_column": None,
    "scale": "auto",
    "hidden": [128, 64],
    "activation": "relu",
    "batchnorm": True,
    "batch_size": 32,
    "optimizer": "sgd",
    "lr": None,  # by optimizer: LEARNING_RATES
    "momentum": 0.9,
    "weight_decay": None,  # by optimizer: WEIGHT_DECAYS
    "schedule": "constant",
    "warmup_epochs": 0,
    "dropout": 0.0,
    "early_stopping": None,
    "backend": "auto",
    "device": None,
    "dtype": "float32",
    "seed": 0,
    "tf32": False,
    "cuda_graph": False,
    "jit": False,
}


#: The default learning rate and weight decay of each optimizer.
LEARNING_RATES = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
WEIGHT_DECAYS = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2}


class UsageError(XpnetValueError):
    """A bad argument or input file: reported in one line, exit status 2."""


def pick_backend(name):
    """The library that ``--backend NAME`` means here: ``auto`` is CuPy with a usable GPU.

    Parameters
    ----------
    name : str
        ``"auto"`` or a library name.

    Returns
    -------
    str
        A library name.
    """
    if name == "auto":
        return "cupy" if "cupy" in backend.available() else "numpy"
    return name


def namespace(name, device):
    """The namespace and device of ``--backend NAME --device DEVICE``.

    Parameters
    ----------
    name : str
        ``"auto"`` or a library name.
    device : str or None
        A device name, or None for the library's default.

    Returns
    -------
    tuple
        The namespace and the resolved device.

    Raises
    ------
    UsageError
        A device that ``auto``'s choice cannot use.
    """
    picked = pick_backend(name)
    if name == "auto" and picked == "numpy" and device not in (None, "cpu"):
        raise UsageError(
            f"--device {device}: no CUDA device is usable here, so --backend auto chose "
            f"numpy, which runs on cpu only; name the backend (--backend torch --device "
            f"{device}), or drop --device"
        )
    xp = backend.get(picked)
    backend.allow_float64(xp)  # the command owns its process: --dtype float64 works on JAX
    return xp, backend.resolve_device(xp, device)


def config_of_run(folder):
    """The configuration saved in a run folder's resume checkpoint.

    Parameters
    ----------
    folder : str or Path
        A run folder that ``xpnet train`` wrote.

    Returns
    -------
    dict
        The run's configuration.

    Raises
    ------
    RunError
        The folder holds no resume checkpoint, or it has no configuration.
    """
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        raise RunError(f"{folder}: no {RESUME_FILE} here, so nothing to resume")
    config = read_metadata(path).get("user", {}).get("config")
    if not isinstance(config, dict):
        raise RunError(f"{path}: no training configuration in its metadata")
    _check_fields(path, "config", config, _CONFIG_FIELDS, required=_CONFIG_REQUIRED)
    return dict(config)


# -- what a resume file may hold: every field checked before it is used -----------------
class _Field:
    """How a metadata field is checked: a predicate, and what it says the value must be."""

    def __init__(self, ok, text):
        self.ok, self.text = ok, text

    def __call__(self, value):
        return self.ok(value)


def _int(low, high=None):
    return _Field(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= (high or v),
        f"an integer of at least {low}" + ("" if high is None else f" and at most {high}"),
    )


def _number(low, high, *, open_low=False, open_high=False):
    return _Field(
        lambda v: (
            not isinstance(v, bool)
            and isinstance(v, (int, float))
            and math.isfinite(v)
            and (low < v if open_low else low <= v)
            and (v < high if open_high else v <= high)
        ),
        f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}",
    )


def _one_of(*choices):
    return _Field(lambda v: isinstance(v, str) and v in choices, f"one of {list(choices)}")


def _kind(*types, text):
    return _Field(
        lambda v: isinstance(v, types) and not (isinstance(v, bool) and bool not in types), text
    )


def _or_none(check):
    return _Field(lambda v: v is None or check(v), f"null or {check.text}")


def _list_of(check, text):
    return _Field(lambda v: isinstance(v, list) and all(check(x) for x in v), text)


#: The learning-rate schedules ``xpnet train --schedule`` names (stepped once per epoch).
SCHEDULES = ("constant", "step", "cosine")


_CONFIG_FIELDS = {
    "dataset": _kind(str, text="a dataset name or path"),
    "label_column": _or_none(_kind(int, str, text="a column index or name")),
    "scale": _one_of(*SCALINGS, "fixed"),  # fixed: what auto chose for data of known range
    "hidden": _list_of(_int(1), "a list of positive integers"),
    "activation": _one_of(*ACTIVATIONS),
    "batchnorm": _kind(bool, text="true or false"),
    "batch_size": _int(1),
    "optimizer": _one_of(*OPTIMIZERS),
    "lr": _number(0, math.inf, open_low=True, open_high=True),
    "momentum": _number(0, 1),
    "weight_decay": _number(0, math.inf, open_high=True),
    "schedule": _one_of(*SCHEDULES),
    "warmup_epochs": _int(0),
    "dropout": _number(0, 1, open_high=True),
    "early_stopping": _or_none(_int(1)),
    "backend": _one_of(*backend.NAMED),
    "device": _or_none(_kind(str, text="a device name")),
    "dtype": _one_of("float32", "float64"),
    "seed": _int(0),
    "tf32": _kind(bool, text="true or false"),
    "cuda_graph": _kind(bool, text="true or false"),
    "jit": _kind(bool, text="true or false"),
    "epochs": _int(1),
    "data_path": _or_none(_kind(str, text="a path")),
    "data_sha256": _or_none(_kind(str, text="a hexadecimal SHA-256")),
}


_CONFIG_REQUIRED = ("dataset", "hidden", "activation", "batchnorm", "batch_size", "lr",
                    "momentum", "weight_decay", "early_stopping", "backend", "device", "dtype",
                    "seed", "epochs")  # fmt: skip


def _check_fields(path, where, record, fields, *, required=()):
    """Refuse a record whose fields have the wrong type or range, naming the first."""
    for name in required:
        if name not in record:
            raise RunError(f"{path}: metadata field '{where}.{name}' is missing")
    for name, ok in fields.items():
        if name in record and not ok(record[name]):
            shown = repr(record[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RunError(
                f"{path}: metadata field '{where}.{name}' must be {ok.text}, got {shown}"
            )


#: Arrays of a parameter's shape that each optimizer keeps (SGD's velocity, Adam's two
#: moment estimates).
OPTIMIZER_BUFFERS = {"sgd": 1, "adam": 2, "adamw": 2}


def _gib(n):
    return f"{n / 2**30:.1f} GiB"


def check_model_fits(sizes, config, xp, device):
    """Refuse a model too large for the memory it would live in, before allocating it.

    Training holds at least the model's state, a gradient of each layer's ``W`` and
    ``b`` and the optimizer's buffers of them (:data:`OPTIMIZER_BUFFERS`), in the run's
    dtype, in the memory of the device (:func:`xpnet.backend.memory_bytes`). The initial
    weights are drawn on the host in float64, one layer at a time, so the host holds
    the largest ``W`` at 8 bytes a value once too. A size that exceeds the memory that
    exists is refused; one that fits may still fail when other work holds memory.

    Parameters
    ----------
    sizes : list of int
        The model's layer widths.
    config : dict
        The run's configuration (``batchnorm``, ``scale``, ``optimizer``, ``dtype``).
    xp : namespace
        The library the model is built on.
    device : device
        Its device.

    Raises
    ------
    RunError
        The model cannot fit, with the sizes and the memory named.
    """
    shapes = MLP.state_shapes(
        sizes, batchnorm=config["batchnorm"], standardize=config["scale"] != "none"
    )
    state = sum(math.prod(shape) for shape in shapes.values())
    linear = {key: math.prod(shape) for key, shape in shapes.items() if key.startswith("layers.")}
    trained = sum(linear.values())  # each layer's W and b
    buffers = OPTIMIZER_BUFFERS[config.get("optimizer", "sgd")]  # as make_optimizer reads it
    itemsize = 8 if config["dtype"] == "float64" else 4
    need = (state + (1 + buffers) * trained) * itemsize
    draw = 8 * max(n for key, n in linear.items() if key.endswith(".W"))
    device = backend.default_device(xp) if device is None else device
    host = host_memory_bytes()
    have = backend.memory_bytes(xp, device)
    if have is not None and need > have:
        where = f"{backend.library_name(xp)} ({backend.device_name(device)})"
        raise RunError(
            f"a model of sizes {sizes} does not fit: its {trained:,} parameters with their "
            f"gradients and the optimizer's buffers need at least {_gib(need)} in "
            f"{config['dtype']}, more than the {_gib(have)} of memory of {where}; choose "
            f"narrower --hidden layers"
        )
    if host is not None and draw > host:
        raise RunError(
            f"a model of sizes {sizes} does not fit: drawing its largest layer's initial "
            f"weights (in float64, on the host) needs {_gib(draw)}, more than the host's "
            f"{_gib(host)} of memory; choose narrower --hidden layers"
        )


def make_optimizer(model, config):
    """The optimizer a run's configuration names, over the model's parameters.

    Parameters
    ----------
    model : MLP
        The model.
    config : dict
        The run's configuration (``optimizer``, ``lr``, ``weight_decay``, ``momentum``).

    Returns
    -------
    Optimizer
        One of :data:`xpnet.optim.OPTIMIZERS`.
    """
    kind = config.get("optimizer", "sgd")
    if kind not in OPTIMIZERS:
        raise RunError(f"unknown optimizer {kind!r}; expected one of {', '.join(OPTIMIZERS)}")
    options = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if kind == "sgd":
        options["momentum"] = config["momentum"]
    return OPTIMIZERS[kind](model, **options)


def make_scheduler(optimizer, config):
    """The run's learning-rate schedule, stepped once per epoch.

    An optional linear warm-up from a tenth of the rate over ``warmup_epochs``, then
    constant, step (a tenth every third of the remaining epochs) or cosine (to zero at
    the last epoch).

    Parameters
    ----------
    optimizer : Optimizer
        What the schedule sets the rate of.
    config : dict
        The run's configuration (``schedule``, ``warmup_epochs``, ``epochs``).

    Returns
    -------
    LRScheduler or None
        None when the rate is constant without warm-up.
    """
    schedule = config.get("schedule", "constant")
    warmup = int(config.get("warmup_epochs", 0) or 0)
    rest = max(1, config["epochs"] - warmup)
    if schedule not in SCHEDULES:
        raise RunError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    warm = LinearLR(optimizer, start_factor=0.1, total_iters=warmup) if warmup else None
    if schedule == "step":
        main = StepLR(optimizer, step_size=max(1, rest // 3), gamma=0.1)
    elif schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=rest)
    else:
        return warm
    return main if warm is None else SequentialLR(optimizer, [warm, main], [warmup])


def _resolved_scaling(choice, data):
    """``"standard"``, ``"fixed"`` (the dataset's range) or ``"none"`` for ``--scale``."""
    if choice not in SCALINGS:
        raise RunError(f"unknown scaling {choice!r}; expected one of {', '.join(SCALINGS)}")
    if choice != "auto":
        return choice
    if data.input_scale:
        return "fixed"
    return "none" if is_builtin(data.name) else "standard"


def new_config(options, *, epochs=None, data_parallel=False):
    """The configuration of a new run from the options given (None: not given).

    Parameters
    ----------
    options : dict
        A value or None for each name of :data:`RUN_OPTIONS`.
    epochs : int, optional
        Passes over the data (default 40).
    data_parallel : bool
        Whether the run sums its gradients across processes.

    Returns
    -------
    dict
        Every field that :func:`config_of_run` reads back, defaults filled in, the backend
        picked and the device resolved.

    Raises
    ------
    UsageError
        Options that contradict each other or cannot be used here, named as the command
        line spells them.
    """
    opts = {k: RUN_DEFAULTS[k] if options.get(k) is None else options[k] for k in RUN_OPTIONS}
    if opts["optimizer"] != "sgd" and options.get("momentum") is not None:
        raise UsageError(
            f"--momentum applies to --optimizer sgd; {opts['optimizer']} uses the moment "
            f"estimates of Adam (betas 0.9, 0.999)"
        )
    if opts["lr"] is None:
        opts["lr"] = LEARNING_RATES[opts["optimizer"]]
    if opts["weight_decay"] is None:
        opts["weight_decay"] = WEIGHT_DECAYS[opts["optimizer"]]
    epochs = epochs or 40
    if not 0 <= opts["warmup_epochs"] < epochs:
        raise UsageError(
            f"--warmup-epochs must lie in [0, {epochs}) for {epochs} epochs, "
            f"got {opts['warmup_epochs']}"
        )
    xp, device = namespace(opts["backend"], opts["device"])
    if opts["seed"] < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {opts['seed']}")
    config = {
        **opts,
        "epochs": epochs,
        "backend": pick_backend(opts["backend"]),
        "device": None if device is None else backend.device_name(device),
    }
    if config["backend"] not in backend.NAMED:
        raise UsageError(
            f"--backend {config['backend']}: a run names its library in its resume file, "
            f"which may name only those xpnet knows ({', '.join(backend.NAMED)}); "
            f"evaluate and predict take any Array API library"
        )
    refusal = config["cuda_graph"] and cuda_graph_refusal(
        library=config["backend"],
        optimizer=OPTIMIZERS[config["optimizer"]],
        dropout=config["dropout"],
        data_parallel=data_parallel,
    )
    if refusal:
        raise UsageError(f"--cuda-graph is not possible here: {refusal}")
    refusal = config["jit"] and compile_refusal(xp, data_parallel=data_parallel)
    if refusal:
        raise UsageError(f"--jit is not possible here: {refusal}")
    return config


def resumed_config(folder, given, *, epochs=None):
    """The configuration of a run to resume, with a new total of epochs if one is given.

    Parameters
    ----------
    folder : Path
        The run folder.
    given : list of str
        The names of :data:`RUN_OPTIONS` given alongside: each is refused, since a resumed
        run keeps its saved configuration.
    epochs : int, optional
        A new total of epochs (refused for a run with a learning-rate schedule, which spans
        the epochs it started with).

    Returns
    -------
    dict
        The saved configuration, checked field by field.

    Raises
    ------
    UsageError
        An option that would change the run.
    RunError
        The folder holds no run to resume, or its configuration is malformed.
    """
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(
            f"{flags} cannot change a run that is resumed: --resume continues "
            f"{folder} with its saved configuration (only --epochs may set a new "
            f"total); start a new run with --out to train with other settings"
        )
    config = config_of_run(folder)
    scheduled = config.get("schedule", "constant") != "constant" or config.get("warmup_epochs")
    if epochs is not None and epochs != config["epochs"] and scheduled:
        raise UsageError(
            f"--epochs cannot change a run with a learning-rate schedule: its schedule "
            f"spans the {config['epochs']} epochs it was started with"
        )
    if epochs is not None:
        config["epochs"] = epochs
    return config
