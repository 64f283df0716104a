"""The benchmark compares like with like: every peer computes xpnet's training step."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from xpnet.app.peers import JaxStep, NumpyStep, SklearnStep, TorchStep, XpnetStep


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


JAX_PEERS = {
    "jax.grad + jit": JaxStep,
    "xpnet on jax": functools.partial(XpnetStep, xp="jax"),
    "xpnet compiled": functools.partial(XpnetStep, xp="jax", compile=True),
}


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("peer", list(JAX_PEERS))
def test_jax_peers_compute_the_same_step(peer, batchnorm):
    """In float32 (JAX's default mode), against xpnet on NumPy: five steps' losses."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    sizes = [6, 9, 7, 4]
    X, y = rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 4, 16)
    ours = XpnetStep(sizes, X, y, batchnorm=batchnorm, lr=0.1)
    theirs = JAX_PEERS[peer](sizes, X, y, batchnorm=batchnorm, lr=0.1)
    np.testing.assert_allclose(
        [float(_value(ours())) for _ in range(5)],
        [float(_value(theirs())) for _ in range(5)],
        rtol=2e-6,
    )


# PyTorch's compiler touches its own deprecated torch.jit on the way
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_torch_peer_computes_the_same_step():
    """The GPU benchmark's compiled PyTorch step (here compiled for the CPU, where
    ``reduce-overhead`` has no CUDA graphs to make) is the same training step."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sizes = [6, 9, 7, 4]
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 4, 16)
    ours = XpnetStep(sizes, X, y, batchnorm=True, lr=0.1)
    theirs = TorchStep(sizes, X, y, batchnorm=True, lr=0.1, compile=True)
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


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf", "two"])
def test_bench_refuses_a_timing_window_that_is_not_a_positive_time(seconds, capsys):
    """A window of no time, of negative time or of infinite time would run the whole
    benchmark at its least, or forever: each is a usage error, as the other options'."""
    from xpnet.app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--seconds", seconds])
    assert exit_.value.code == 2
    expected = (
        f"expected a number of seconds, got {seconds!r}"
        if seconds == "two"
        else f"expected a finite number of seconds above 0, got {seconds}"
    )
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"xpnet bench: error: argument --seconds: {expected}"
    )


def test_gpu_benchmark_code_path_on_the_cpu():
    """``xpnet bench --gpu`` measures on CuPy and CUDA; here its code runs with NumPy and
    PyTorch's CPU standing in, at small sizes, so that a GPU session spends its time
    measuring rather than debugging."""
    pytest.importorskip("torch")
    from xpnet.app.bench_gpu import format_gpu_table, run_gpu
    from xpnet.app.peers import GemmFloor

    table = {"small": ([8, 16, 4], 32, False), "small+bn": ([8, 16, 16, 4], 32, True)}
    rows = run_gpu(
        seconds=0.05,
        xp="numpy",
        torch_device="cpu",
        table=table,
        precisions=("float32", "tf32"),
        compiled=False,  # CUDA graphs only; compiling for the CPU takes a minute here
    )
    assert [(r["size"], r["precision"], r["peer"]) for r in rows] == [
        (size, precision, peer)
        for precision in ("float32", "tf32")
        for size in table
        for peer in ("xpnet", "graph", "generic", "torch", "compile", "gemm")
    ]
    # NumPy has neither CUDA graphs nor fused kernels to turn off
    measured = {(r["size"], r["precision"], r["peer"]): r["us"] for r in rows}
    assert all(
        (us is None) == (peer in ("graph", "generic", "compile"))
        for (_, _, peer), us in measured.items()
    )
    assert all(us > 0 for us in measured.values() if us is not None)
    text = format_gpu_table(rows, "a CPU standing in")
    assert "a CPU standing in" in text and "small+bn" in text and "tf32" in text
    last = text.splitlines()[-1].split()  # xpnet/pt, graph/pt, xpnet/ptc, graph/ptc, xpnet/floor
    assert last[-5].endswith("x") and last[-4:-1] == ["n/a"] * 3 and last[-1].endswith("x")
    # the floor does the step's products: 2 for the first layer, 3 for each later one
    from xpnet import backend

    floor = GemmFloor([8, 16, 4], 32, backend.get("numpy"))
    assert floor().shape == (32, 16)


def test_gpu_peers_take_turns_round_by_round():
    """Every round runs each peer's share in turn (a drift of the machine touches all), a
    peer that raises is reported and left out, and the others keep their numbers."""
    from xpnet.app.bench_gpu import time_interleaved

    calls = []

    def step(name):
        def run():
            calls.append(name)
            if name == "bad" and len(calls) > 9:  # in the second round
                raise RuntimeError("out of memory")

        return run

    steps = {name: (step(name), lambda: None) for name in ("a", "b", "bad")}
    times, errors = time_interleaved(steps, seconds=0.0, rounds=3, warmup=1)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())
    assert errors == {"bad": "RuntimeError: out of memory"}
    # after each peer's warm-up and trial call, one call of each per round, in turn
    assert calls[6:] == ["a", "b", "bad", "a", "b", "bad", "a", "b"]


def test_gemm_floor_with_its_own_products():
    """The floor through another products' routine (xpnet's cuBLAS calls on CuPy) does
    the same products as through ``@``."""
    from xpnet import backend
    from xpnet.app.peers import GemmFloor

    seen = []

    def matmul(A, B, trans_a=False, trans_b=False):
        seen.append((A.shape, B.shape, trans_a, trans_b))
        return (A.T if trans_a else A) @ (B.T if trans_b else B)

    xp = backend.get("numpy")
    plain = GemmFloor([8, 16, 4], 32, xp)
    own = GemmFloor([8, 16, 4], 32, xp, matmul=matmul)
    np.testing.assert_array_equal(own(), plain())
    assert len(seen) == 2 + 3  # forward per layer, then dW per layer and dA past the first


def test_gpu_benchmark_refuses_without_cuda():
    from xpnet import backend

    if "cupy" in backend.available():
        pytest.skip("a CUDA device is visible")
    result = subprocess.run(
        [sys.executable, "-m", "xpnet", "bench", "--gpu"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "needs CuPy and a visible CUDA device" in result.stderr
