"""What :func:`xpnet.train.fit` calls at the end of every epoch and of the whole run.

A callback is an object with any of ``on_epoch_end(model, state, record)`` and
``on_fit_end(model, state)``, as in Keras and Lightning: early stopping, logging and
checkpoints are callbacks, and so is whatever a user passes of their own. ``fit`` calls
them in the order given, after the epoch's record is complete and the learning-rate
schedule has stepped; ``on_fit_end`` only when training ends without an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from .nn._checks import check_size

__all__ = ["Callback", "EarlyStopping", "LambdaCallback"]


class Callback:
    """Base of the callbacks: every hook does nothing.

    Attributes
    ----------
    needs_validation : bool
        Class attribute: ``fit`` refuses the callback without ``validation`` data.
    """

    needs_validation: ClassVar[bool] = False

    def on_epoch_end(self, model: Any, state: Any, record: dict) -> None:
        """After every completed epoch.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands (what a resume checkpoint saves); setting
            ``state.stopped_early`` ends training after this epoch.
        record : dict
            The epoch's entry of the history.
        """

    def on_fit_end(self, model: Any, state: Any) -> None:
        """Once, when training ends without an error.

        Parameters
        ----------
        model : MLP
            The trained model.
        state : FitState
            The final state.
        """


class EarlyStopping(Callback):
    """Stop when the validation loss stops improving; end with the best epoch's parameters.

    Training stops after ``patience`` epochs without a lower ``val_loss``. The
    bookkeeping (best loss and epoch, epochs waited, the best parameters) lives in the
    :class:`~xpnet.train.FitState`, so a resumed run continues it exactly.

    Parameters
    ----------
    patience : int
        Epochs without a lower ``val_loss`` before training stops; positive.
    """

    needs_validation = True

    def __init__(self, patience: int) -> None:
        self.patience = check_size(patience, "patience", "EarlyStopping")

    def on_epoch_end(self, model: Any, state: Any, record: dict) -> None:
        """Keep the best epoch's parameters, or count one more epoch without progress.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Its ``best``, ``best_epoch``, ``waited``, ``best_state`` and
            ``stopped_early`` are updated.
        record : dict
            The epoch's record, with ``val_loss``.
        """
        if record["val_loss"] < state.best:
            state.best, state.best_epoch, state.waited = record["val_loss"], record["epoch"], 0
            xp = model.xp
            state.best_state = {k: xp.asarray(v, copy=True) for k, v in model.state_dict().items()}
        else:
            state.waited += 1
            state.stopped_early = state.waited >= self.patience

    def on_fit_end(self, model: Any, state: Any) -> None:
        """Restore the parameters of the best epoch.

        Parameters
        ----------
        model : MLP
            The trained model.
        state : FitState
            Its ``best_state``.
        """
        if state.best_state is not None:
            model.load_state_dict(state.best_state)


class LambdaCallback(Callback):
    """A callback from functions, as Keras's: each one given is called for its hook.

    Parameters
    ----------
    on_epoch_end : callable, optional
        ``on_epoch_end(model, state, record)``.
    on_fit_end : callable, optional
        ``on_fit_end(model, state)``.
    """

    def __init__(
        self,
        on_epoch_end: Callable[[Any, Any, dict], None] | None = None,
        on_fit_end: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self._epoch_end, self._fit_end = on_epoch_end, on_fit_end

    def on_epoch_end(self, model: Any, state: Any, record: dict) -> None:
        """Call the ``on_epoch_end`` function given, if any.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands.
        record : dict
            The epoch's record.
        """
        if self._epoch_end is not None:
            self._epoch_end(model, state, record)

    def on_fit_end(self, model: Any, state: Any) -> None:
        """Call the ``on_fit_end`` function given, if any.

        Parameters
        ----------
        model : MLP
            The trained model.
        state : FitState
            The final state.
        """
        if self._fit_end is not None:
            self._fit_end(model, state)
