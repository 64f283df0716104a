"""The benchmark compares like with like: every peer computes xpnet's training step."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xpnet.app.bench import XpnetStep
from xpnet.app.peers import NumpyStep, SklearnStep, TorchStep


def _value(loss):
    return loss.detach().numpy() if hasattr(loss, "detach") else np.asarray(loss)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("peer", [NumpyStep, TorchStep])
def test_peers_compute_the_same_step(peer, batchnorm):
    if peer is TorchStep:
        pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sizes = [6, 9, 7, 4]
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 4, 16)
    ours = XpnetStep(sizes, X, y, batchnorm=batchnorm, lr=0.1)
    theirs = peer(sizes, X, y, batchnorm=batchnorm, lr=0.1)
    np.testing.assert_allclose(
        [float(_value(ours())) for _ in range(5)],
        [float(_value(theirs())) for _ in range(5)],
        rtol=1e-10,
    )


def test_sklearn_peer_runs():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    step = SklearnStep([6, 9, 4], rng.standard_normal((16, 6)), rng.integers(0, 4, 16))
    step()
    with pytest.raises(ValueError, match="no BatchNorm"):
        SklearnStep([6, 9, 4], np.zeros((2, 6)), np.zeros(2, int), batchnorm=True)


def test_bench_command_prints_a_table():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xpnet",
            "bench",
            "--sizes",
            "tiny",
            "--peers",
            "xpnet,numpy",
            "--seconds",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "xpnet/numpy" in result.stdout and "tiny" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "xpnet", "bench", "--sizes", "huge"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown sizes or peers ['huge']" in bad.stderr
