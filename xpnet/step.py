"""One training step, written once: forward, loss, backward and update.

:class:`Step` is the readable step: the model's ``forward``, the loss, the model's
``backward`` and the optimizer's ``step``, in Array API calls on any library; the
executors of :mod:`xpnet.executors` run it faster where a library allows, and
:func:`xpnet.executors.make_step` chooses which. :func:`graph_step` records a step as a
CUDA graph, and :func:`cuda_graph_refusal` is the one place that says what such a
recording cannot hold.
"""

from __future__ import annotations

from typing import Any

from . import backend
from ._typing import Array
from .errors import XpnetValueError
from .nn import Module

__all__ = ["Step", "count_correct", "cuda_graph_refusal", "graph_step"]


def count_correct(out: Array, y: Array, xp: Any) -> Array:
    """How many rows of ``out`` have their largest value at their label: ``argmax``.

    Parameters
    ----------
    out : array
        ``(N, C)`` scores.
    y : array
        ``(N,)`` integer labels.
    xp : namespace
        Their namespace.

    Returns
    -------
    array
        0-d, of ``out``'s dtype, on the device (nothing read back).
    """
    return xp.sum(xp.astype(xp.argmax(out, axis=1) == y, out.dtype))


class Step:
    """A model's training step: ``model.forward``, the loss, ``model.backward``, the update.

    The phases are apart so that a caller can act between them (read the loss back before
    anything changes, sum gradients across processes before the update); calling the step
    runs all of them.

    Parameters
    ----------
    model : MLP
        The model, in the mode it should train in.
    loss : Module
        A loss with ``forward(A, y)`` and ``backward()``. Its ``forward_unchecked(A, y, xp)``
        is used where it has one of its own (xpnet's losses): the labels are checked once
        per dataset, not per step. A loss of one's own, a :class:`~xpnet.nn.Module` or any
        object with the two methods, runs its ``forward``.
    optimizer : Optimizer
        Updates the model's parameters from their gradients.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.models import MLP
    >>> from xpnet.nn import CrossEntropyLoss
    >>> from xpnet.optim import SGD
    >>> model = MLP([4, 8, 3], seed=0)
    >>> step = Step(model, CrossEntropyLoss(), SGD(model, lr=0.1))
    >>> X, y = np.ones((6, 4), dtype=np.float32), np.arange(6) % 3
    >>> out, L = step(X, y)
    >>> out.shape
    (6, 3)
    """

    def __init__(self, model: Any, loss: Any, optimizer: Any) -> None:
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self._xp = model.xp
        # a loss's own forward_unchecked(A, y, xp); not a layer's (X, xp), which a loss
        # written as a Module inherits and would be called with one argument too many
        unchecked = getattr(type(loss), "forward_unchecked", Module.forward_unchecked)
        self._unchecked = None if unchecked is Module.forward_unchecked else loss.forward_unchecked

    def forward(self, X: Array, y: Array) -> tuple[Array, Array]:
        """The model's output and the loss.

        Parameters
        ----------
        X : array
            ``(N, F)`` features on the model's library and device.
        y : array
            The targets the loss takes.

        Returns
        -------
        out : array
            The model's output.
        loss : array
            0-d, on the device.
        """
        out = self.model.forward(X)
        return out, self._loss_forward(out, y)

    def _loss_forward(self, out, y):
        if self._unchecked is None:
            return self.loss.forward(out, y)
        return self._unchecked(out, y, self._xp)

    def backward(self, scale: float | None = None, *, input_grad: bool = False) -> Array | None:
        """Set every parameter's gradient from the last :meth:`forward`.

        Parameters
        ----------
        scale : float, optional
            Multiplies the loss's gradient (a process's share of a global batch).
        input_grad : bool
            Also return the gradient with respect to the input (training does not need it).

        Returns
        -------
        array or None
            ``dLdX`` with ``input_grad``, else None.
        """
        grad = self.loss.backward()
        return self.model.backward(grad if scale is None else grad * scale, input_grad=input_grad)

    def update(self) -> None:
        """Update the parameters from their gradients (the optimizer's step)."""
        self.optimizer.step()

    def correct(self, out: Array, y: Array) -> Array:
        """How many rows of ``out`` have their largest value at their label (``argmax``).

        Parameters
        ----------
        out : array
            ``(N, C)`` scores, as :meth:`forward` returns them.
        y : array
            ``(N,)`` integer labels.

        Returns
        -------
        array
            0-d, of ``out``'s dtype, on the device (no host synchronisation).
        """
        return count_correct(out, y, self._xp)

    def __call__(self, X: Array, y: Array) -> tuple[Array, Array]:
        """Run the whole step.

        Parameters
        ----------
        X : array
            The batch's features.
        y : array
            Its targets.

        Returns
        -------
        out : array
            The model's output.
        loss : array
            0-d, on the device.
        """
        out, L = self.forward(X, y)
        self.backward()
        self.update()
        return out, L


def cuda_graph_refusal(
    *, library: str | None, optimizer: type, dropout: float = 0.0, data_parallel: bool = False
) -> str | None:
    """Why a training step cannot be recorded as a CUDA graph and replayed, or None.

    Decided here once, for :func:`xpnet.train.fit` with ``cuda_graph=True`` and for
    ``xpnet train --cuda-graph`` (which asks before it builds anything). A graph replays the
    same kernels with the same numbers, so everything the step draws or counts on the host
    must stay out of it.

    Parameters
    ----------
    library : str or None
        The array library's name (``xpnet.backend.library_name``); None leaves the
        library to the backend's recorder (:func:`graph_step` asks it for one, and refuses
        with the same words when it has none).
    optimizer : type
        The optimizer's class: its ``same_update_every_step`` must hold.
    dropout : float
        The largest dropout probability in the model.
    data_parallel : bool
        Whether gradients are summed across processes.

    Returns
    -------
    str or None
        The reason, in one clause; None when the step can be recorded.
    """
    if data_parallel:
        return "data-parallel runs sum gradients outside the step"
    if dropout > 0:
        return "dropout draws its masks on the host every step"
    if not getattr(optimizer, "same_update_every_step", False):
        return f"{optimizer.__name__} changes its step size every step (bias correction)"
    if library is not None and library != "cupy":
        return _not_recordable(library)
    return None


def _not_recordable(library):
    return f"the model's arrays are {library}'s, not CuPy's (CUDA graphs need backend 'cupy')"


def graph_step(step: Step, *, data_parallel: bool = False) -> Any:
    """The CUDA-graph runner of ``step``: recorded once per shape and replayed.

    Parameters
    ----------
    step : Step
        The step to record (on CuPy, :func:`~xpnet.executors.make_step`'s fused plan).
    data_parallel : bool
        Whether the run sums gradients across processes (refused).

    Returns
    -------
    callable
        ``runner(X, y, key=...)`` returning the loss and, for ``(N,)`` labels, the right
        predictions (:meth:`Step.correct`), 0-d arrays of the graph
        (:func:`xpnet.backend.cuda_graph_step`).

    Raises
    ------
    XpnetValueError
        What :func:`cuda_graph_refusal` refuses, or a library without CUDA graphs.
    """
    model = step.model
    refusal = cuda_graph_refusal(
        library=None,  # the recorder below says whether the library has CUDA graphs
        optimizer=type(step.optimizer),
        dropout=max((d.p for d in getattr(model, "dropout_layers", ())), default=0.0),
        data_parallel=data_parallel,
    )
    if refusal:
        raise XpnetValueError(f"fit: cuda_graph=True is not possible here: {refusal}")
    runner = backend.cuda_graph_step(lambda X, y: _recorded(step, X, y), model.layers[0].W)
    if runner is None:
        raise XpnetValueError(
            "fit: cuda_graph=True is not possible here: "
            + _not_recordable(backend.library_name(model.xp))
        )
    return runner


def _recorded(step, X, y, *, count=True):
    """The step as a graph records it: the loss and the count, every update included."""
    out, L = step.forward(X, y)
    # no count for regression targets, or for a caller that does not want one
    correct = step.correct(out, y) if count and y.ndim == 1 else None
    step.backward()
    step.update()
    return (L,) if correct is None else (L, correct)
