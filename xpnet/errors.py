"""The exceptions xpnet raises: one base class, each also the builtin a user would catch.

Every error that xpnet raises on purpose derives from :class:`XpnetError`, so
``except xpnet.errors.XpnetError`` catches exactly the problems xpnet diagnosed (bad
input, a bad file, a run that cannot continue) and lets programming errors through. Each
class also derives from the builtin exception that Python code already catches for that
kind of problem: ``TypeError`` for kinds and dtypes, ``ValueError`` for values and shapes,
``RuntimeError`` for call order, ``FileNotFoundError`` for a missing file,
``ModuleNotFoundError`` for a library that is not installed.

Examples
--------
>>> import numpy as np
>>> from xpnet.errors import XpnetError
>>> from xpnet.nn import Linear
>>> try:
...     Linear(2, 3).forward(np.ones((4, 5), dtype=np.float32))
... except ValueError as err:  # also an XpnetError
...     print(isinstance(err, XpnetError))
True
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "BackendNotInstalledError",
    "BackendUnavailableError",
    "CallOrderError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DataError",
    "DataFileNotFoundError",
    "RunError",
    "TrainingDiverged",
    "XpnetError",
    "XpnetTypeError",
    "XpnetValueError",
]


class XpnetError(Exception):
    """Base class of every error that xpnet raises on purpose."""


class XpnetTypeError(XpnetError, TypeError):
    """An argument of the wrong kind or dtype (a non-float array, an unknown namespace)."""


class XpnetValueError(XpnetError, ValueError):
    """An argument with a bad value or shape, or arrays on different devices."""


class CallOrderError(XpnetError, RuntimeError):
    """A method called out of order, such as ``backward`` before ``forward``."""


class BackendUnavailableError(XpnetError, RuntimeError):
    """An installed array library that cannot run here (CuPy without a CUDA device)."""


class BackendNotInstalledError(XpnetError, ModuleNotFoundError):
    """An array library that is not installed; the message names the extra to install."""


class _NotFound(FileNotFoundError):
    """A ``FileNotFoundError`` built from one message (and the path), printed as that."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = _errno.ENOENT, filename

    def __str__(self) -> str:
        return str(self.args[0])


class DataError(XpnetValueError):
    """A dataset name or data file that cannot be used; the message says why."""


class DataFileNotFoundError(_NotFound, DataError):
    """A data file that does not exist.

    Raised as ``DataFileNotFoundError(message, filename=path)``; ``errno`` is ``ENOENT``
    and ``filename`` the path, as for any ``FileNotFoundError``.
    """


class CheckpointError(XpnetValueError):
    """A checkpoint that cannot be trusted or used; the message names the field or check."""


class CheckpointNotFoundError(_NotFound, CheckpointError):
    """A checkpoint file that does not exist.

    Raised as ``CheckpointNotFoundError(message, filename=path)``; ``errno`` is ``ENOENT``
    and ``filename`` the path, as for any ``FileNotFoundError``.
    """


class RunError(XpnetValueError):
    """A run folder or run configuration that cannot be used; the message says why."""


class TrainingDiverged(XpnetError, RuntimeError):
    """Training stopped because the loss diverged.

    Parameters
    ----------
    epoch, step : int
        Where it happened (1-based); ``step`` is None when the whole epoch's mean loss
        crossed the bound.
    value : float
        The offending loss.
    bound : float, optional
        The bound the loss crossed; None for a NaN or infinite loss.

    Attributes
    ----------
    epoch, step, value, bound
        As given.
    """

    def __init__(self, epoch, step, value, bound=None):
        self.epoch, self.step, self.value, self.bound = epoch, step, value, bound
        where = f"epoch {epoch}" + ("" if step is None else f", step {step}")
        if bound is None:
            text = f"the training loss became {value} at {where}"
        else:
            text = f"the mean training loss of {where} was {value:.4g}, above the bound {bound:.4g}"
        super().__init__(f"{text}. Lower the learning rate (or check the data for NaN/inf values)")
