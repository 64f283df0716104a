"""What every optimizer shares: finding the parameters, the learning rate, the checks."""

from __future__ import annotations

from typing import Any, ClassVar

from .. import backend
from .._typing import Array
from ..errors import CallOrderError, XpnetTypeError, XpnetValueError
from ..nn._checks import check_real
from ..nn.module import Module, Param

__all__ = ["Optimizer"]


class Optimizer:
    """Base of xpnet's optimizers: the parameters to update and the learning rate.

    A subclass keeps its per-parameter state in dicts keyed by parameter name and
    implements ``step``. The learning rate is the attribute ``lr``, which the schedules
    of :mod:`xpnet.optim.lr_scheduler` set.

    Parameters
    ----------
    params : Module, model with ``layers``, or iterable of Param
        What to update: a model (every parameter its
        :meth:`~xpnet.nn.Module.named_parameters` reports); any object with a ``layers``
        list of :class:`~xpnet.nn.Linear` and optionally a ``bn_layers`` list of
        :class:`~xpnet.nn.BatchNorm1d` (the handout's ``PseudoModel``); or an iterable of
        :class:`~xpnet.nn.Param` handles or ``(name, Param)`` pairs.
    lr : float
        The learning rate, > 0.

    Attributes
    ----------
    params : list of (str, Param)
        The parameters by name, in the model's order.
    lr : float
        The learning rate.
    initial_lr : float or None
        The learning rate before any schedule (set by the first schedule created).
    l : list
        ``model.layers`` (empty for an iterable of parameters), as the handout names it.
    same_update_every_step : bool
        Class attribute: whether a step is the same arithmetic every time, with no step
        count in it (SGD), so that a recorded step can be replayed; False for Adam, whose
        bias corrections change with the step count.
    state_attributes : tuple of str
        Class attribute: the attributes that ``step`` changes besides the parameters:
        dicts of arrays by parameter name, or numbers (Adam's step count). A compiled step
        passes them in and out of its program (:mod:`xpnet.compiled`).
    """

    same_update_every_step = False
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any, lr: float) -> None:
        name = type(self).__name__
        self.params = _named_params(params, name)
        self.lr = check_real(lr, "lr", name, low=0.0, low_open=True)
        self.initial_lr: float | None = None  # set by the first learning-rate schedule
        layers = getattr(params, "layers", None)
        self.l = layers if isinstance(layers, (list, tuple)) else []
        self.L = len(self.l)
        bn_layers = getattr(params, "bn_layers", None)
        self._n_bn = len(bn_layers) if isinstance(bn_layers, (list, tuple)) else 0

    def step(self) -> None:
        """Update every parameter once from its current gradient (see each optimizer)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step")

    def gradients(self) -> list[Array]:
        """The parameters' gradients, in the order of :attr:`params`.

        Returns
        -------
        list of array
            One gradient per parameter.

        Raises
        ------
        CallOrderError
            A gradient is missing (naming the first): ``backward`` has not run.
        """
        grads = [p.grad for _, p in self.params]
        missing = next((k for k, g in enumerate(grads) if g is None), None)
        if missing is not None:
            name, p = self.params[missing]
            where = name.rpartition(".")[0]
            raise CallOrderError(
                f"{type(self).__name__}.step(): {where + '.' if where else ''}{p.grad_attr} "
                f"is None; call model.backward(...) before step()"
            )
        return grads

    def _namespace(self, buffers):
        """The namespace of the parameters, which must live with the optimizer's buffers."""
        first_name, first = self.params[0]
        try:
            return backend.namespace(first.value, buffers[first_name])
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{type(self).__name__}.step(): the model's parameters and this optimizer's "
                f"buffers live apart ({err}); create the optimizer after moving the model "
                f"with .to()"
            ) from None

    def _restore(self, buffers, state, key):
        """Copy ``state[key(name)]`` into ``buffers[name]`` for every parameter, onto the
        parameters' library, device and dtype."""
        for name, old in buffers.items():
            full = key(name)
            if full not in state:
                raise XpnetValueError(
                    f"{type(self).__name__}.load_state_dict: missing buffer {full!r}"
                )
            new = state[full]
            if tuple(new.shape) != tuple(old.shape):
                raise XpnetValueError(
                    f"{type(self).__name__}.load_state_dict: {full!r} has shape "
                    f"{tuple(new.shape)}, expected {tuple(old.shape)}"
                )
            xp = backend.namespace(old)
            moved = backend.convert(new, xp, device=backend.device(old), dtype=old.dtype)
            # own the buffer: updates change it in place
            buffers[name] = xp.asarray(moved, copy=True) if moved is new else moved


def _named_params(source, who):
    """``[(name, Param)]`` from a model, a handout-style object with ``layers``, or an
    iterable of Param handles or ``(name, Param)`` pairs."""
    if callable(getattr(source, "named_parameters", None)):
        found = list(source.named_parameters())
    elif isinstance(getattr(source, "layers", None), (list, tuple)):
        found = []
        for group in ("layers", "bn_layers"):
            for i, layer in enumerate(getattr(source, group, None) or []):
                if not isinstance(layer, Module):
                    raise XpnetTypeError(
                        f"{who}: model.{group}[{i}] ({layer!r}) is not an xpnet layer with "
                        f"parameters"
                    )
                found.extend(layer.named_parameters(f"{group}.{i}."))
    else:
        try:
            items = list(source)
        except TypeError:
            raise XpnetTypeError(
                f"{who}: expected a model, an object with a 'layers' list, or an iterable of "
                f"parameters (model.named_parameters()), got {type(source).__name__}"
            ) from None
        found = []
        for i, item in enumerate(items):
            if isinstance(item, Param):
                found.append((str(i), item))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Param):
                found.append((str(item[0]), item[1]))
            else:
                raise XpnetTypeError(
                    f"{who}: parameter {i} must be an xpnet.nn.Param or a (name, Param) pair "
                    f"as named_parameters() yields, got {type(item).__name__}"
                )
    if not found:
        raise XpnetValueError(
            f"{who}: {type(source).__name__} has no parameters to optimise; pass a model with "
            f"layers or a non-empty iterable of parameters"
        )
    return found


def _zeros_like(x: Array) -> Array:
    return backend.namespace(x).zeros_like(x)
