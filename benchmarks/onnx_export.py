"""The ONNX graphs of ``xpnet.onnx.export`` beside another exporter's, side by side.

For each model: nodes (those inside subgraphs counted too), file size, and ONNX Runtime's
median latency on the CPU at batch 1 and 256 (the two sessions interleaved, one thread),
and the largest difference from xpnet's own forward. ``--reference FILE`` names a
module with the same ``export`` function (an earlier ``xpnet/onnx.py``) to compare with:

    git show v0.2.0:xpnet/onnx.py > /tmp/onnx_before.py
    python benchmarks/onnx_export.py --reference /tmp/onnx_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import xpnet.onnx
from xpnet.models import MLP

MODELS = {
    "mnist": dict(sizes=[784, 256, 128, 10]),
    "mnist+bn": dict(sizes=[784, 256, 128, 10], batchnorm=True),
    "mnist gelu": dict(sizes=[784, 256, 128, 10], activation="gelu"),
    "wide": dict(sizes=[784, 1024, 1024, 10]),
}


def _nodes(graph):
    count = 0
    for node in graph.node:
        count += 1
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                count += _nodes(attribute.g)
    return count


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latencies(sessions, X, repeats):
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, {"input": X})
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) * 1e6 for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="another exporter module to compare")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    exporters = {"xpnet.onnx": xpnet.onnx.export}
    if args.reference:
        spec = importlib.util.spec_from_file_location("xpnet._onnx_reference", args.reference)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        exporters["reference"] = module.export
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    print(
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, float32, one thread; "
        f"latency: median of {args.repeats}, exporters interleaved"
    )
    print(
        f"{'model':<11} {'exporter':<11} {'nodes':>6} {'bytes':>9} "
        f"{'b1 µs':>8} {'b256 µs':>8} {'max diff':>9}"
    )
    for name, options in MODELS.items():
        model = MLP(**options, dtype="float32", seed=1).eval()
        paths = {
            who: export(model, folder / f"{who}.onnx", softmax=False)
            for who, export in exporters.items()
        }
        sessions = [_session(p) for p in paths.values()]
        X = rng.standard_normal((256, options["sizes"][0])).astype(np.float32)
        expected = model.forward(X)
        small = _latencies(sessions, X[:1], args.repeats)
        large = _latencies(sessions, X, max(args.repeats // 10, 10))
        for i, (who, path) in enumerate(paths.items()):
            graph = onnx.load(path).graph
            (out,) = sessions[i].run(None, {"input": X})
            diff = float(np.max(np.abs(out - expected)))
            print(
                f"{name:<11} {who:<11} {_nodes(graph):>6} {path.stat().st_size:>9} "
                f"{small[i]:>8.1f} {large[i]:>8.1f} {diff:>9.1e}"
            )


if __name__ == "__main__":
    main()
