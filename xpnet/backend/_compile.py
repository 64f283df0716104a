"""Compiling a whole function into one program, where the library has a compiler (JAX)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ._namespace import library_name

__all__ = ["Compiler", "compiler"]


class Compiler(NamedTuple):
    """A library's compiler of whole functions (see :func:`compiler`)."""

    #: ``jit(fn, donate)``: ``fn`` traced once per set of argument shapes and dtypes into
    #: one program, which may reuse the memory of the positional arguments in ``donate``.
    jit: Any
    #: ``shapes(fn, *args)``: ``fn`` traced without computing, for the shapes it makes.
    shapes: Any


def compiler(xp) -> Compiler | None:
    """The library's compiler of whole functions, or None where it has none.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    Compiler or None
        For JAX, ``jax.jit`` (one XLA computation) and ``jax.eval_shape``; None elsewhere.
    """
    if library_name(xp) != "jax":
        return None
    import jax

    return Compiler(
        jit=lambda fn, donate=(): jax.jit(fn, donate_argnums=donate), shapes=jax.eval_shape
    )
