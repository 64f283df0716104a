"""Optimizers: SGD, Adam and AdamW over the parameters modules declare, and schedules."""

from __future__ import annotations

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]

#: The optimizers by the name the command line, the run files and the scikit-learn
#: estimators use.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
