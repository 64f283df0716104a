"""Tracing array code into an ONNX graph.

Through ndonnx, whose arrays record ONNX nodes, and spox, the graph builder it stands on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendNotInstalledError

__all__ = ["onnx_erf", "onnx_erfc", "onnx_graph", "onnx_op", "symbolic_input"]


def _ndonnx():
    try:
        import ndonnx
    except ImportError:
        raise BackendNotInstalledError(
            "ONNX export traces the model through ndonnx: pip install 'xpnet[onnx]'"
        ) from None
    return ndonnx


def symbolic_input(n_features: int, dtype: str) -> Any:
    """An ndonnx array standing for the graph's input: ``("N", n_features)`` of ``dtype``.

    Parameters
    ----------
    n_features : int
        The width.
    dtype : str
        ``"float32"`` or ``"float64"``.

    Returns
    -------
    ndonnx.Array
        Symbolic in its first dimension, named ``N`` in the graph.
    """
    ndx = _ndonnx()
    return ndx.argument(shape=("N", n_features), dtype=getattr(ndx, dtype))


def onnx_op(name: str, *inputs: Any, **attributes: Any) -> Any:
    """One ONNX operator applied to ndonnx arrays, as an ndonnx array.

    Parameters
    ----------
    name : str
        The operator as spox names it (``"gemm"``, ``"batch_normalization"``, ``"relu"``).
    *inputs : ndonnx.Array
        Its inputs.
    **attributes
        Its attributes (``transB=1``, ``epsilon=1e-5``, ``to=numpy.float32``).

    Returns
    -------
    ndonnx.Array
        Its (first) output.
    """
    ndx = _ndonnx()
    from spox.opset.ai.onnx import v21

    out = getattr(v21, name)(*(x.unwrap_spox() for x in inputs), **attributes)
    return ndx.asarray(out[0] if isinstance(out, tuple) else out)


def onnx_graph(inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    """The ONNX model that computes ``outputs`` from the symbolic ``inputs``.

    Parameters
    ----------
    inputs : dict
        Input name to :func:`symbolic_input` array.
    outputs : dict
        Output name to an ndonnx array computed from them.

    Returns
    -------
    onnx.ModelProto
        In ndonnx's opset (21).
    """
    return _ndonnx().build(inputs, outputs)


def onnx_erf(x: Any) -> Any:
    """ONNX's ``Erf`` of an ndonnx array, computed in float32.

    ONNX Runtime computes ``Erf`` in float32 only, so a float64 ``x`` is cast down for it
    and its result cast back.

    Parameters
    ----------
    x : ndonnx.Array
        Real floating.

    Returns
    -------
    ndonnx.Array
        Of ``x``'s dtype.
    """
    if str(x.dtype) == "float32":
        return onnx_op("erf", x)
    narrowed = onnx_op("cast", x, to=np.dtype(np.float32))
    return onnx_op("cast", onnx_op("erf", narrowed), to=np.dtype(np.float64))


def onnx_erfc(x: Any) -> Any:
    """``1 - Erf(x)`` of an ndonnx array, ONNX having no ``Erfc``.

    Exact to float32's absolute rounding only, not relative to a tiny result in the tail.

    Parameters
    ----------
    x : ndonnx.Array
        Real floating.

    Returns
    -------
    ndonnx.Array
        Of ``x``'s dtype.
    """
    return 1.0 - onnx_erf(x)
