"""Export a model to ONNX, to run it with ONNX Runtime from C++, C#, Java, JavaScript or Python.

The graph is traced: the model's own evaluation-mode ``forward`` runs once on a symbolic
input of ndonnx (arrays whose operations record ONNX nodes), so any module written
against the Array API exports, a layer of your own included, with no exporter code.
The built-in layers are the exception that keeps the graph small: a
:class:`~xpnet.nn.Linear` becomes one ``Gemm``, a :class:`~xpnet.nn.BatchNorm1d` one
``BatchNormalization`` with its running statistics and ``eps``, and ReLU, Sigmoid and Tanh
their ONNX operators. Everything else is traced as written: the input scaling of a
:class:`~xpnet.nn.Standardize` (Sub, Div), GELU in its exact form through ONNX's ``Erf``
(which ONNX Runtime computes in float32 only, so a float64 model's GELU is exact to
float32 there), nothing for Dropout and Identity. One input, ``"input"``, of the model's
dtype with a dynamic batch dimension ``N``; one output, ``"logits"``; with
``softmax=True`` also ``"probabilities"``. Needs ``pip install 'xpnet[onnx]'`` (onnx,
ndonnx and onnxruntime).

Examples
--------
>>> import os, tempfile
>>> from xpnet.models import MLP
>>> from xpnet.onnx import export
>>> path = export(MLP([4, 8, 3]).eval(), os.path.join(tempfile.mkdtemp(), "m.onnx"))
>>> path.name
'm.onnx'
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import backend
from .errors import BackendNotInstalledError, XpnetTypeError, XpnetValueError
from .nn import BatchNorm1d, Linear, Module, ReLU, Sigmoid, Tanh

__all__ = ["DEFAULT_OPSET", "export"]

#: The opset ``export`` writes unless told otherwise (ONNX Runtime 1.14 and newer run it).
DEFAULT_OPSET = 17
#: The opset the trace is recorded in (ndonnx's); a lower one is reached by onnx's converter.
TRACE_OPSET = 21


def _onnx():
    try:
        import onnx
        import onnx.version_converter
    except ImportError:
        raise BackendNotInstalledError(
            "ONNX export needs the onnx package: pip install 'xpnet[onnx]'"
        ) from None
    return onnx


def _gemm(layer, A, xp):
    """A Linear as one ``Gemm``: ``A Wᵀ + b`` (``b`` stored as the row it is added as)."""
    b = xp.asarray(backend.to_numpy(layer.b)[:, 0])
    return backend.onnx_op("gemm", A, layer.W, b, transB=1)


def _batchnorm(layer, Z, xp):
    """A BatchNorm1d in evaluation mode as one scale and one shift per feature, computed
    on the host in float64: ``Z s + t`` with ``s = BW / sqrt(V + eps)``, ``t = Bb - M s``."""
    BW, Bb, M, V = (
        backend.to_numpy(getattr(layer, k)).astype("float64")
        for k in ("BW", "Bb", "running_M", "running_V")
    )
    scale = BW / (V + layer.eps) ** 0.5
    return Z * xp.asarray(scale, dtype=Z.dtype) + xp.asarray(Bb - M * scale, dtype=Z.dtype)


def _operator(name, layer, Z, xp):
    """An activation as its ONNX operator."""
    return backend.onnx_op(name, Z)


#: The built-in layers with an ONNX operator of their own, by exact type (a subclass that
#: changes ``forward`` is traced as written).
_FORMS: dict[type, Callable[..., Any]] = {
    Linear: _gemm,
    BatchNorm1d: _batchnorm,
    ReLU: functools.partial(_operator, "relu"),
    Sigmoid: functools.partial(_operator, "sigmoid"),
    Tanh: functools.partial(_operator, "tanh"),
}


def export(
    model: Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    softmax: bool = False,
    n_features: int | None = None,
) -> Path:
    """Write ``model`` as an ONNX graph of its evaluation-mode forward pass.

    The model is not changed: a copy of it, in evaluation mode, is traced.

    Parameters
    ----------
    model : Module
        An MLP or any module whose ``forward`` takes ``(N, F)`` and returns ``(N, K)``,
        on any backend; its arrays are copied to the host.
    path : str or Path
        The ``.onnx`` file to write.
    opset : int
        The ONNX opset, from 15 to 21: the trace records 21 (ndonnx's), and onnx's
        version converter writes an earlier one.
    softmax : bool
        Add a second output, ``"probabilities"``, the softmax of the logits.
    n_features : int, optional
        The input width ``F``; read from the model where it says (``sizes[0]`` of an MLP,
        ``in_features`` or ``num_features`` of a layer), required otherwise.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BackendNotInstalledError
        onnx or ndonnx is not installed.
    XpnetTypeError
        Not a Module, or a forward that does not return an ``(N, K)`` array.
    XpnetValueError
        An opset out of range or that the graph's operators do not reach, or no
        ``n_features`` where the model does not say.
    """
    onnx = _onnx()
    if not isinstance(model, Module):
        raise XpnetTypeError(f"export: expected an xpnet Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 15 <= opset <= TRACE_OPSET:
        raise XpnetValueError(
            f"export: opset must be an int from 15 to {TRACE_OPSET}, got {opset!r}"
        )
    X = backend.symbolic_input(_width(model, n_features), _dtype(model))
    traced = copy.deepcopy(model).eval().to(backend.get("ndonnx"))
    for _, module in traced.named_modules():
        form = _FORMS.get(type(module))
        if form is not None:  # an instance attribute of the copy, which is then dropped
            module.forward_unchecked = functools.partial(form, module)  # type: ignore[method-assign]
    logits = traced.forward(X)
    if getattr(logits, "ndim", None) != 2:
        raise XpnetTypeError(
            f"export: {type(model).__name__}.forward must return an (N, K) array, got "
            f"{type(logits).__name__} of shape {getattr(logits, 'shape', None)}"
        )
    outputs = {"logits": logits}
    if softmax:
        outputs["probabilities"] = backend.onnx_op("softmax", logits, axis=1)
    proto = backend.onnx_graph({"input": X}, outputs)
    _constants_as_initializers(proto.graph, onnx)
    _outputs_without_identities(proto.graph)
    if opset != TRACE_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, opset)
        except RuntimeError as err:  # an operator onnx's converter cannot take that far back
            raise XpnetValueError(
                f"export: the graph cannot be written in opset {opset} ({err}); use a later one"
            ) from None
    from . import __version__

    # the oldest IR version that holds this opset, not the newest the onnx package knows:
    # runtimes older than the package still read the file
    proto.ir_version = onnx.helper.find_min_ir_version_for(proto.opset_import)
    proto.producer_name, proto.producer_version = "xpnet", __version__
    proto.doc_string = f"{type(model).__name__}({model.extra_repr()}) in evaluation mode"
    proto.graph.name = f"xpnet_{type(model).__name__}"
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    onnx.save(proto, path)
    return path


def _constants_as_initializers(graph, onnx):
    """Move the trace's ``Constant`` nodes (the weights among them) to the graph's
    initializers, where ONNX tools look for weights."""
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _outputs_without_identities(graph):
    """Name the tensors the outputs are computed as by the outputs' names, instead of
    copying them to those names with ``Identity`` (as the trace does): one node fewer per
    output, and onnx's converter has no ``Identity`` below opset 16."""
    outputs = {value.name for value in graph.output}
    given = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    nodes = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Identity" else None
        if source is None or node.output[0] not in outputs or source in given | outputs:
            nodes.append(node)
            continue
        for other in graph.node:  # the top level only: subgraphs compute no outputs here
            other.input[:] = [node.output[0] if n == source else n for n in other.input]
            other.output[:] = [node.output[0] if n == source else n for n in other.output]
    del graph.node[:]
    graph.node.extend(nodes)


def _width(model, n_features):
    """The input width: given, or as the model states it."""
    stated = getattr(model, "sizes", None)
    stated = stated[0] if stated else None
    for name in ("in_features", "num_features"):
        stated = stated or getattr(model, name, None)
    width = n_features if n_features is not None else stated
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise XpnetValueError(
            f"export: pass n_features, the input width; {type(model).__name__} does not "
            f"state it (got {width!r})"
        )
    return width


def _dtype(model):
    """The dtype of the model's arrays (its first), float32 for a model without any."""
    for value in model.state_dict().values():
        return backend.dtype_name(value.dtype)
    return "float32"
