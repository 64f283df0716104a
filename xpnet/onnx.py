"""Export a model to ONNX, to run it with ONNX Runtime from C++, C#, Java, JavaScript or Python.

The graph computes what ``model.forward`` returns in evaluation mode: Sub and Div for
the input scaling of a model that carries one (:class:`~xpnet.nn.Standardize`), Gemm for each
Linear, BatchNormalization with the running statistics and ``eps``, the activations
(GELU in its exact form, through Erf; ONNX Runtime computes Erf in float32 only, so a
float64 model's GELU is exact to float32 there), nothing for Dropout and Identity. One input,
``"input"``, of the model's dtype with a dynamic batch dimension; one output, ``"logits"``;
with ``softmax=True`` also ``"probabilities"``. Built with the ``onnx`` package's helpers
(``pip install 'xpnet[onnx]'``).

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

import math
import os
from pathlib import Path

import numpy as np

from . import backend
from .errors import BackendNotInstalledError, XpnetTypeError, XpnetValueError
from .models import MLP
from .nn import GELU, Identity, ReLU, Sigmoid, Tanh

__all__ = ["DEFAULT_OPSET", "export"]

#: The opset ``export`` writes unless told otherwise (ONNX Runtime 1.14 and newer run it).
DEFAULT_OPSET = 17
_OPS = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise BackendNotInstalledError(
            "ONNX export needs the onnx package: pip install 'xpnet[onnx]'"
        ) from None
    return onnx


def export(
    model: MLP, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, softmax: bool = False
) -> Path:
    """Write ``model`` as an ONNX graph of its evaluation-mode forward pass.

    Parameters
    ----------
    model : MLP
        An MLP (or MLP0/MLP1/MLP4) on any backend; its arrays are copied to the host.
    path : str or Path
        The ``.onnx`` file to write.
    opset : int
        The ONNX opset, at least 15 (for BatchNormalization without training outputs).
    softmax : bool
        Add a second output, ``"probabilities"``, the softmax of the logits.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BackendNotInstalledError
        The onnx package is not installed.
    XpnetTypeError
        Not an MLP, or a layer the export does not know.
    XpnetValueError
        An opset below 15.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model, MLP):
        raise XpnetTypeError(f"export: expected an xpnet MLP, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 15:
        raise XpnetValueError(f"export: opset must be an int >= 15, got {opset!r}")
    dtype = np.dtype(backend.dtype_name(model.dtype))
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    nodes, weights = [], []

    def _const(name, value):
        weights.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    current = "input"
    for scaling in model.standardize_layers:  # (input - mean) / scale, as the layer computes
        mean, scale = (backend.to_numpy(getattr(scaling, k))[0] for k in ("mean", "scale"))
        nodes.append(helper.make_node("Sub", [current, _const("input_mean", mean)], ["centred"]))
        nodes.append(helper.make_node("Div", ["centred", _const("input_scale", scale)], ["scaled"]))
        current = "scaled"
    for i, layer in enumerate(model.layers):
        W, b = backend.to_numpy(layer.W), backend.to_numpy(layer.b)[:, 0]
        out = f"linear{i}"
        nodes.append(
            helper.make_node(
                "Gemm", [current, _const(f"W{i}", W), _const(f"b{i}", b)], [out], transB=1
            )
        )
        current = out
        if i < len(model.bn_layers):
            bn = model.bn_layers[i]
            inputs = [current] + [
                _const(f"bn{i}_{name}", backend.to_numpy(getattr(bn, name))[0])
                for name in ("BW", "Bb", "running_M", "running_V")
            ]
            out = f"batchnorm{i}"
            nodes.append(
                helper.make_node("BatchNormalization", inputs, [out], epsilon=float(bn.eps))
            )
            current = out
        current = _activation(model.f[i], current, i, nodes, _const, helper, elem)
    nodes.append(helper.make_node("Identity", [current], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", elem, ["N", model.sizes[-1]])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        outputs.append(helper.make_tensor_value_info("probabilities", elem, ["N", model.sizes[-1]]))
    graph = helper.make_graph(
        nodes,
        f"xpnet_{type(model).__name__}",
        [helper.make_tensor_value_info("input", elem, ["N", model.sizes[0]])],
        outputs,
        initializer=weights,
    )
    from . import __version__

    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        # the oldest IR version that holds this opset, not the newest the onnx package
        # knows: runtimes older than the package still read the file
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="xpnet",
        producer_version=__version__,
        doc_string=f"{type(model).__name__}({model.extra_repr()}) in evaluation mode",
    )
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    onnx.save(proto, path)
    return path


def _activation(f, current, i, nodes, _const, helper, elem):
    """Append the nodes of activation ``f`` and return the name of its output."""
    from onnx import TensorProto

    if isinstance(f, Identity):
        return current
    out = f"activation{i}"
    if type(f) in _OPS:
        nodes.append(helper.make_node(_OPS[type(f)], [current], [out]))
        return out
    if isinstance(f, GELU):  # x Φ(x) = x (1 + erf(x/√2)) / 2, the exact form
        scaled, erf, shifted, half = (f"gelu{i}_{k}" for k in ("scaled", "erf", "shifted", "half"))
        nodes.append(
            helper.make_node("Mul", [current, _const(f"gelu{i}_c", 1 / math.sqrt(2))], [scaled])
        )
        if elem == TensorProto.DOUBLE:  # ONNX Runtime's Erf is float32 only
            nodes.append(helper.make_node("Cast", [scaled], [f"{scaled}32"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Erf", [f"{scaled}32"], [f"{erf}32"]))
            nodes.append(helper.make_node("Cast", [f"{erf}32"], [erf], to=elem))
        else:
            nodes.append(helper.make_node("Erf", [scaled], [erf]))
        nodes += [
            helper.make_node("Add", [erf, _const(f"gelu{i}_one", 1.0)], [shifted]),
            helper.make_node("Mul", [current, _const(f"gelu{i}_h", 0.5)], [half]),
            helper.make_node("Mul", [half, shifted], [out]),
        ]
        return out
    raise XpnetTypeError(f"export: no ONNX form for activation {type(f).__name__}")
