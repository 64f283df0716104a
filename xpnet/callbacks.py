"""What :func:`xpnet.train.fit` calls around every epoch and step and at the end of a run.

A callback is a :class:`Callback` that overrides any of its hooks, as in Keras and
Lightning: early stopping, the progress bar, logging and checkpoints are callbacks, and so
is whatever a user passes of their own. ``fit`` calls them in the order given:
``on_epoch_begin`` before an epoch's first step, ``on_batch_end`` after every step,
``on_epoch_end`` after the epoch's record is complete and the learning-rate schedule has
stepped, and ``on_fit_end`` only when training ends without an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from .nn._checks import check_size

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ProgressBar"]


class Callback:
    """Base of the callbacks: every hook does nothing.

    Attributes
    ----------
    needs_validation : bool
        Class attribute: ``fit`` refuses the callback without ``validation`` data.
    """

    needs_validation: ClassVar[bool] = False

    def on_epoch_begin(self, model: Any, state: Any, epoch: dict) -> None:
        """Before an epoch's first step.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands (``state.epoch`` epochs are done).
        epoch : dict
            ``epoch`` (its number, from 1), ``epochs`` (the last one's) and ``steps``
            (how many it takes).
        """

    def on_batch_end(self, model: Any, state: Any, batch: dict) -> None:
        """After every step (a hook that does nothing costs the step nothing).

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands.
        batch : dict
            ``step`` (from 1 in each epoch) and, once the losses have been read back from
            the device (every ``check_every`` steps of :func:`~xpnet.train.fit`; every
            step on the host), ``loss`` and, for class labels, ``accuracy``: the epoch's
            running means as last read.
        """

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


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, showing the epoch's running loss and accuracy.

    What ``fit(..., progress=True)`` adds in front of the other callbacks (where they hold
    no progress bar of their own). The numbers are those read back last; none is read for
    the bar.

    Parameters
    ----------
    refresh : int
        Steps between two updates of the numbers shown; positive (10 by default).
    """

    def __init__(self, refresh: int = 10) -> None:
        self.refresh = check_size(refresh, "refresh", "ProgressBar")
        self._bar: Any = None
        self._next = 0

    def on_epoch_begin(self, model: Any, state: Any, epoch: dict) -> None:
        """Open the epoch's bar.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands.
        epoch : dict
            Its ``epoch``, ``epochs`` and ``steps``.
        """
        import sys

        from tqdm.auto import tqdm

        self._close()
        self._bar = tqdm(
            total=epoch["steps"], desc=f"epoch {epoch['epoch']}/{epoch['epochs']}",
            leave=False, unit="batch", file=sys.stderr, dynamic_ncols=True,
        )  # fmt: skip
        self._next = self.refresh

    def on_batch_end(self, model: Any, state: Any, batch: dict) -> None:
        """Advance the bar; every ``refresh`` steps, show the running means.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands.
        batch : dict
            Its ``step`` and, when known, ``loss`` and ``accuracy``.
        """
        self._bar.update(1)
        if batch["step"] >= self._next and "loss" in batch:
            self._next = batch["step"] + self.refresh
            shown = {"loss": f"{batch['loss']:.4f}"}
            if "accuracy" in batch:
                shown["acc"] = f"{batch['accuracy']:.4f}"
            self._bar.set_postfix(shown)

    def on_epoch_end(self, model: Any, state: Any, record: dict) -> None:
        """Close the epoch's bar.

        Parameters
        ----------
        model : MLP
            The model being trained.
        state : FitState
            Where training stands.
        record : dict
            The epoch's record.
        """
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
