"""Compiling a whole function into one program, where the library has a compiler (JAX)."""

from __future__ import annotations

from ._namespace import library_name

__all__ = ["compiler"]


def compiler(xp):
    """The library's compiler of whole functions, or None where it has none.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    callable or None
        For JAX, ``compile(fn, donate)``: ``jax.jit(fn, donate_argnums=donate)``, which
        traces ``fn`` once per set of argument shapes and dtypes into one XLA computation
        and lets it reuse the memory of the arguments in ``donate``. None elsewhere.
    """
    return _jax_jit if library_name(xp) == "jax" else None


def _jax_jit(fn, donate=()):
    import jax

    return jax.jit(fn, donate_argnums=donate)
