"""Data-parallel training as a wrapper beneath the model: SyncBatchNorm1d swapped in by
convert_sync_batchnorm, ShardedDropout and the gradient sum of DataParallel, checked in
one process with a stand-in communicator (tests/mpi runs them under mpiexec)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from tests.helpers import OneProcess, ThreadedProcesses, asarray, saved_arrays, to_numpy
from xpnet import distributed
from xpnet.distributed import (
    DataParallel,
    MPICommunicator,
    ShardedDropout,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)
from xpnet.errors import BackendNotInstalledError, XpnetValueError
from xpnet.models import MLP
from xpnet.nn import BatchNorm1d, CrossEntropyLoss, Dropout
from xpnet.optim import SGD
from xpnet.train import fit


def test_conversion_keeps_the_arrays_and_the_checkpoint_keys(xp, device):
    model = MLP([5, 8, 6, 3], batchnorm=True, xp=xp, device=device, seed=2)
    before = [(bn.BW, bn.Bb, bn.running_M, bn.running_V) for bn in model.bn_layers]
    keys = list(model.state_dict())
    model.eval()
    comm = OneProcess()
    assert convert_sync_batchnorm(model, comm) is model
    assert [type(bn) for bn in model.bn_layers] == [SyncBatchNorm1d, SyncBatchNorm1d]
    for bn, arrays in zip(model.bn_layers, before, strict=True):
        assert bn.comm is comm and not bn.training
        now = (bn.BW, bn.Bb, bn.running_M, bn.running_V)
        assert all(a is b for a, b in zip(now, arrays, strict=True))
    assert list(model.state_dict()) == keys
    again = list(model.bn_layers)
    convert_sync_batchnorm(model, comm)  # converting twice changes nothing
    assert all(a is b for a, b in zip(model.bn_layers, again, strict=True))


def test_fit_refuses_batchnorm_that_is_not_synchronised(xp, device):
    model = MLP([5, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64")
    start = to_numpy(model.layers[0].W).copy()
    X = asarray(xp, device, np.random.default_rng(0).standard_normal((32, 5)))
    y = asarray(xp, device, np.arange(32) % 3, dtype="int64")
    with pytest.raises(XpnetValueError, match=r"layers \[0\] would normalise .*convert_sync"):
        fit(model, CrossEntropyLoss(), SGD(model), (X, y), epochs=1, batch_size=16,
            comm=OneProcess())  # fmt: skip
    np.testing.assert_array_equal(to_numpy(model.layers[0].W), start)
    assert type(model.bn_layers[0]) is BatchNorm1d


@pytest.mark.parametrize("batchnorm", [False, True])
def test_one_process_through_the_wrapper_trains_as_without_it(xp, device, batchnorm):
    """The same steps: without BatchNorm to the bit; with it, the global statistics come
    from shifted sums (one all-reduce) instead of two passes, so to rounding."""
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((96, 5)))
    y = asarray(xp, device, rng.integers(0, 3, 96), dtype="int64")
    results = []
    for comm in (None, OneProcess()):
        model = MLP([5, 16, 3], batchnorm=batchnorm, dropout=0.3, xp=xp, device=device,
                    dtype="float64", seed=1)  # fmt: skip
        drops = list(model.dropout_layers)
        if comm is not None:
            convert_sync_batchnorm(model, comm)
        opt = SGD(model, lr=0.05, momentum=0.9)
        history = fit(model, CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=32, comm=comm)
        assert all(a is b for a, b in zip(model.dropout_layers, drops, strict=True))
        assert all(type(d) is Dropout for d in model.dropout_layers)
        state = [d.rng.bit_generator.state for d in drops]
        results.append(([to_numpy(p.value) for _, p in model.named_parameters()], history, state))
    (alone, h0, s0), (through, h1, s1) = results
    rtol = 1e-10 if batchnorm else 0
    for a, b in zip(alone, through, strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=0)
    np.testing.assert_allclose([r["loss"] for r in h1], [r["loss"] for r in h0], rtol=rtol)
    assert s0 == s1  # the generators moved on alike


def test_sharded_masks_put_together_are_the_whole_batch_s(xp, device):
    X = asarray(xp, device, np.ones((10, 4)))
    whole = to_numpy(Dropout(0.4, seed=7).forward(X))
    parts = []
    for start, stop in ((0, 4), (4, 7), (7, 10)):  # three processes' shards
        drop = ShardedDropout.from_module(Dropout(0.4, seed=7))
        drop.shard = (10, start, stop)
        parts.append(to_numpy(drop.forward(X[start:stop, ...])))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < np.count_nonzero(whole == 0) < whole.size


def test_the_wrapper_sums_gradients_and_loss_in_one_call(xp, device):
    class Counting(OneProcess):
        calls = 0

        def allreduce_sum(self, x):
            Counting.calls += 1
            return x * 2  # as if a second process had the same numbers

    model = MLP([4, 6, 3], batchnorm=False, xp=xp, device=device, dtype="float64", seed=0)
    X = asarray(xp, device, np.random.default_rng(1).standard_normal((8, 4)))
    y = asarray(xp, device, np.arange(8) % 3, dtype="int64")
    loss = CrossEntropyLoss()
    L = loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    grads = [to_numpy(p.grad).copy() for _, p in model.named_parameters()]
    with DataParallel(model, Counting()) as parallel:
        total = parallel.sum_gradients(L)
    assert Counting.calls == 1
    assert float(total) == pytest.approx(2 * float(L), rel=1e-15)
    for g, (_, p) in zip(grads, model.named_parameters(), strict=True):
        np.testing.assert_array_equal(to_numpy(p.grad), 2 * g)


# the variables by which distributed.init() knows a launcher started it
LAUNCHERS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID")


@pytest.fixture
def job(monkeypatch):
    """``job(size)``: a ThreadedProcesses of ``size`` processes, its stand-in mpi4py the one
    imported; no launcher's variables set; the excepthook and the communicator init()
    makes restored afterwards."""
    for key in LAUNCHERS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(distributed, "_ACTIVE", [])

    def make(size, **kwargs):
        processes = ThreadedProcesses(size, **kwargs)
        monkeypatch.setitem(sys.modules, "mpi4py", processes.module)
        return processes

    return make


def _fit(xp, device, X, y, comm, *, batchnorm, batch_size=50):
    model = MLP([5, 16, 3], batchnorm=batchnorm, dropout=0.3, xp=xp, device=device,
                dtype="float64", seed=1)  # fmt: skip
    if comm is not None:
        convert_sync_batchnorm(model, comm)
    history = fit(model, CrossEntropyLoss(), SGD(model, lr=0.05, momentum=0.9), (X, y),
                  epochs=2, batch_size=batch_size, comm=comm, seed=3)  # fmt: skip
    return {k: to_numpy(v) for k, v in model.state_dict().items()}, history


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("size", [2, 3])
def test_n_processes_compute_what_one_computes(xp, device, job, batchnorm, size):
    """Threads for processes: each takes its shard of every global batch (of 50 rows and,
    without BatchNorm, a last of 46: 17, 17, 16 and 16, 15, 15 rows for three), draws its
    rows of the global dropout masks and sums its statistics and gradients with the
    others through MPICommunicator; the parameters, running statistics and history are
    those of one process on the whole batches."""
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((96, 5)) * 3 + 1)
    y = asarray(xp, device, rng.integers(0, 3, 96), dtype="int64")
    alone, h1 = _fit(xp, device, X, y, None, batchnorm=batchnorm)
    runs = job(size).run(
        lambda world: _fit(xp, device, X, y, MPICommunicator(world), batchnorm=batchnorm)
    )
    for state, history in runs:  # every process ends with the same model
        assert state.keys() == alone.keys()
        for key, value in alone.items():
            np.testing.assert_allclose(state[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
        for got, want in zip(history, h1, strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
            assert got["accuracy"] == want["accuracy"]


def test_the_communicator_knows_its_place_and_sums_on_the_host(job):
    """Ranks, local ranks (two processes to a machine), and sums of host arrays of any
    dtype: the same shape and dtype back, a new array, the input left alone."""
    processes = job(4, per_machine=2)

    def process(world):
        comm = MPICommunicator(world)
        x = np.arange(6, dtype="int64").reshape(2, 3) * (comm.rank + 1)
        total = comm.allreduce_sum(x)
        assert total is not x and total.dtype == x.dtype and total.shape == (2, 3)
        np.testing.assert_array_equal(x, np.arange(6).reshape(2, 3) * (comm.rank + 1))
        half = comm.allreduce_sum(np.full(3, 0.5, dtype="float32"))
        assert half.dtype == np.float32
        return comm.rank, comm.size, comm.local_rank, comm.transport, to_numpy(total), half

    reports = processes.run(process)
    assert [r[:4] for r in reports] == [(r, 4, r % 2, "mpi") for r in range(4)]
    for r in reports:
        np.testing.assert_array_equal(r[4], np.arange(6).reshape(2, 3) * 10)
        np.testing.assert_array_equal(r[5], np.full(3, 2.0))
    assert sorted(processes.freed) == [0, 1, 2, 3]  # the machine communicators freed


@pytest.mark.parametrize("usable", ["all", "first"])
def test_device_sums_bootstrap_once_per_device_and_agree(job, monkeypatch, usable):
    """Arrays that are not NumPy's: NCCL (a stand-in) where every process can load it, made
    once per device with the id process 0 alone makes; else, or for a dtype it does not
    sum, every process stages through the host."""
    import array_api_strict as xps

    from xpnet import backend

    processes = job(3)
    made, ids = [], []

    class StandIn:
        def __init__(self, unique_id, rank, size, like):
            made.append((unique_id, rank, size, str(like.device)))

        def supports(self, x):
            return x.dtype == xps.float64

        def __call__(self, x):
            return x * 10  # told apart from the host's sum

    def unique_id():
        ids.append(processes.current_rank())
        return "id", processes.current_rank()

    def nccl_usable(x):
        assert x.device in devices  # asked of the array to sum
        return usable == "all" or processes.current_rank() == 0

    monkeypatch.setattr(backend, "nccl_usable", nccl_usable)
    monkeypatch.setattr(backend, "nccl_unique_id", unique_id)
    monkeypatch.setattr(backend, "NCCLSum", StandIn)
    devices = [xps.Device("CPU_DEVICE"), xps.Device("device1")]

    def process(world):
        comm = MPICommunicator(world)
        sums = []
        for device in (*devices, devices[0]):
            x = xps.asarray([1.0, float(comm.rank)], device=device)
            total = comm.allreduce_sum(x)
            assert total.device == device and total.dtype == xps.float64
            sums.append(([float(v) for v in total], comm.transport))
        counts = comm.allreduce_sum(xps.asarray([1, comm.rank], device=devices[0]))
        assert counts.dtype == xps.int64  # not summed by the stand-in: through the host
        return sums, ([int(v) for v in counts], comm.transport)

    reports = processes.run(process)
    staged = "mpi, staged through the host"
    for rank, (sums, counts) in enumerate(reports):
        assert counts == ([3, 3], staged)
        if usable == "all":
            assert sums == [([10.0, 10.0 * rank], "nccl")] * 3
        else:  # one process cannot: all stage through the host
            assert sums == [([3.0, 3.0], staged)] * 3
    if usable == "all":
        assert ids == [0, 0]  # one id per device, by process 0 alone
        assert sorted(made) == sorted((("id", 0), r, 3, str(d)) for r in range(3) for d in devices)
    else:
        assert made == [] and ids == []


def test_broadcast_gives_every_process_the_root_s_value(job):
    processes = job(3)
    got = processes.run(lambda world: MPICommunicator(world).broadcast({"r": world.Get_rank()}, 2))
    assert got == [{"r": 2}] * 3


@pytest.mark.parametrize(
    "env",
    [{}, {"PMI_RANK": "0"}, {"PMI_SIZE": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"},
     {"SLURM_PROCID": "0"}, {"PMIX_RANK": "0"}],
    ids=["no launcher", "PMI_RANK", "PMI_SIZE=1", "OMPI_COMM_WORLD_SIZE=1", "SLURM_PROCID",
         "PMIX_RANK"],
)  # fmt: skip
def test_init_without_mpi4py_is_one_process_unless_launched_with_several(job, monkeypatch, env):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # "import mpi4py" raises ImportError
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = sys.excepthook
    assert distributed.init() is None
    assert distributed.active() is None and sys.excepthook is before


@pytest.mark.parametrize("env", [{"PMI_SIZE": "2"}, {"OMPI_COMM_WORLD_SIZE": "3"}])
def test_init_without_mpi4py_refuses_several_processes(job, monkeypatch, env):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    processes = next(iter(env.values()))
    message = (
        rf"^started under MPI with {processes} processes but mpi4py is not installed: "
        r"pip install 'xpnet\[mpi\]'$"
    )
    with pytest.raises(BackendNotInstalledError, match=message):
        distributed.init()


def test_init_started_alone_leaves_mpi_alone(job):
    """No launcher's variables: one process, whatever MPI would say."""
    processes = job(4)
    before = sys.excepthook
    assert distributed.init() is None and distributed.active() is None
    assert processes.freed == [] and sys.excepthook is before  # no communicator made


@pytest.mark.parametrize("key", LAUNCHERS)
def test_init_is_none_for_one_process_under_a_launcher(job, monkeypatch, key):
    processes = job(1)
    monkeypatch.setenv(key, "0")
    before = sys.excepthook
    assert distributed.init() is None and distributed.active() is None
    assert processes.freed == [] and sys.excepthook is before  # no communicator made


@pytest.mark.parametrize("key", LAUNCHERS)
def test_init_under_a_launcher_makes_the_world_s_communicator(job, monkeypatch, key):
    """Several processes: the world's communicator, and an excepthook that ends the whole
    job after the usual report."""
    processes = job(4)
    monkeypatch.setenv(key, "0")
    monkeypatch.setattr(MPICommunicator, "abort_grace", 0.0)
    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: reported.append(exc))
    comm = distributed.init()
    assert isinstance(comm, MPICommunicator) and distributed.active() is comm
    assert (comm.rank, comm.size, comm.transport) == (0, 4, None)
    try:
        raise RuntimeError("on process 0")
    except RuntimeError as caught:
        error = caught
    sys.excepthook(RuntimeError, error, error.__traceback__)
    assert reported == [(RuntimeError, error, error.__traceback__)]  # the usual report, then
    assert processes.aborted == [(0, 1)]  # the end of every process


def test_synchronised_batchnorm_takes_what_batchnorm_takes():
    comm = OneProcess()
    for args in ((), (0.7, 1e-3)):
        sync, plain = SyncBatchNorm1d(4, *args, comm=comm), BatchNorm1d(4, *args)
        assert (sync.alpha, sync.eps) == (plain.alpha, plain.eps)
        assert sync.comm is comm


def test_a_sharded_dropout_without_a_shard_draws_as_the_plain_layer(xp, device):
    X = asarray(xp, device, np.ones((6, 5)))
    twin = ShardedDropout.from_module(Dropout(0.4, seed=7))
    assert twin.shard is None
    np.testing.assert_array_equal(
        to_numpy(twin.forward(X)), to_numpy(Dropout(0.4, seed=7).forward(X))
    )


def test_opening_and_closing_twice_keeps_the_model_s_dropout_layers():
    model = MLP([4, 6, 3], dropout=0.2, seed=0)
    drops = list(model.dropout_layers)
    parallel = DataParallel(model, OneProcess())
    parallel.close()  # not open: nothing to put back
    assert model.dropout_layers == drops
    parallel.open()
    twins = list(model.dropout_layers)
    parallel.open()
    assert model.dropout_layers == twins and all(type(d) is ShardedDropout for d in twins)
    parallel.close()
    parallel.close()
    assert model.dropout_layers == drops
    with parallel:  # and open again
        assert all(type(d) is ShardedDropout for d in model.dropout_layers)
    assert model.dropout_layers == drops


@pytest.mark.parametrize(("rows", "trains"), [(98, True), (97, False)])
def test_a_last_batch_of_fewer_rows_than_processes_is_skipped_by_all(job, rows, trains):
    """Three processes, batches of 19: a last batch of 3 rows (one each) trains as one
    process trains it; one of 2 rows is skipped by every process alike."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((rows, 5)), rng.integers(0, 3, rows)
    alone, _ = _fit(np, None, X, y, None, batchnorm=False, batch_size=19)
    runs = job(3).run(
        lambda world: _fit(np, None, X, y, MPICommunicator(world), batchnorm=False, batch_size=19)
    )
    for state, _ in runs:
        for key, value in runs[0][0].items():  # every process ends with the same model
            np.testing.assert_array_equal(state[key], value, err_msg=key)
        same = all(np.allclose(state[k], alone[k], rtol=1e-10, atol=1e-12) for k in alone)
        assert same == trains


def test_abort_flushes_and_waits_before_ending_the_job(monkeypatch):
    """mpiexec stops forwarding output when MPI_Abort ends the job: the error message must
    be out of this process, and given a moment to travel, before the abort."""
    events = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def flush(self):
            events.append(("flush", self.name, time.perf_counter()))

    class World:
        def Abort(self, code):  # mpi4py's name
            events.append(("abort", code, time.perf_counter()))

    monkeypatch.setattr(sys, "stdout", Stream("stdout"))
    monkeypatch.setattr(sys, "stderr", Stream("stderr"))
    comm = MPICommunicator.__new__(MPICommunicator)  # no MPI: only abort is exercised
    comm.comm, comm.abort_grace = World(), 0.3
    comm.abort(7)
    assert [e[:2] for e in events] == [("flush", "stdout"), ("flush", "stderr"), ("abort", 7)]
    assert events[2][2] - events[1][2] >= 0.3
    comm.abort_grace = 0.0
    comm.abort()  # an error's status by default
    assert events[-1][:2] == ("abort", 1)


TRAIN = ["train", "--dtype", "float64", "--epochs", "2", "--hidden", "32,16"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """``xpnet train`` of 2 epochs in one process, the reference of the runs below."""
    from xpnet.app.cli import main

    out = tmp_path_factory.mktemp("alone") / "run"
    assert main([*TRAIN, "--quiet", "--out", str(out)]) == 0
    return out


def _assert_same_model(folder, reference):
    got, want = (saved_arrays(f / "model.safetensors") for f in (folder, reference))
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("size", [2, 3])
def test_the_command_line_under_a_launcher_trains_as_one_process(
    job, monkeypatch, capsys, tmp_path, one_process_run, size
):
    """``mpiexec -n N xpnet train`` as threads: the first process alone prints and writes
    the run folder, which records N processes; the model is the one process's."""
    from xpnet.app.cli import main
    from xpnet.checkpoint import read_metadata

    processes = job(size)
    monkeypatch.setenv("PMI_RANK", "0")
    out = tmp_path / "run"
    capsys.readouterr()
    assert processes.run(lambda world: main([*TRAIN, "--out", str(out)])) == [0] * size
    printed = capsys.readouterr()
    assert printed.out.count("test accuracy:") == 1
    assert f"on numpy (cpu, {size} processes), float64" in printed.out
    assert printed.err.count("epoch   2/2") == 1
    _assert_same_model(out, one_process_run)
    assert json.loads((out / "metrics.json").read_text())["config"]["world_size"] == size
    assert read_metadata(out / "model.safetensors")["user"]["config"]["world_size"] == size


def test_the_command_line_resumes_under_a_launcher(job, monkeypatch, tmp_path, one_process_run):
    from xpnet.app.cli import main

    processes = job(2)
    monkeypatch.setenv("PMI_RANK", "0")
    out = str(tmp_path / "run")
    first = [a if a != "2" else "1" for a in TRAIN]  # one epoch of the two
    assert processes.run(lambda world: main([*first, "--quiet", "--out", out])) == [0, 0]
    resumed = ["train", "--resume", out, "--epochs", "2", "--quiet"]
    assert processes.run(lambda world: main(resumed)) == [0, 0]
    _assert_same_model(tmp_path / "run", one_process_run)


def test_the_command_line_ends_the_job_when_a_run_fails(job, monkeypatch, capsys, tmp_path):
    """A run that fails under a launcher says why and ends every process (MPI_Abort with
    its exit status), rather than leave the others waiting in their next sum."""
    from xpnet.app.cli import main

    processes = job(2)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setattr(MPICommunicator, "abort_grace", 0.0)
    missing = tmp_path / "missing.csv"
    command = ["train", "--dataset", str(missing), "--out", str(tmp_path / "run")]
    assert processes.run(lambda world: main(command)) == [2, 2]
    # each process aborts with its status (through the communicator init() made last:
    # the threads share the one that a process holds alone)
    assert [code for _, code in processes.aborted] == [2, 2]
    assert f"xpnet train: error: {missing}" in capsys.readouterr().err


def test_fit_refuses_a_batch_smaller_than_the_processes(job):
    """A global batch of fewer rows than processes would leave one without a row in
    every step: refused before anything trains."""
    model = MLP([4, 6, 3], seed=0)
    start = to_numpy(model.layers[0].W).copy()
    X, y = np.ones((8, 4)), np.arange(8) % 3

    def process(world):
        with pytest.raises(XpnetValueError) as refused:
            fit(model, CrossEntropyLoss(), SGD(model), (X, y), epochs=1, batch_size=2,
                comm=MPICommunicator(world))  # fmt: skip
        return str(refused.value)

    assert job(3).run(process) == ["fit: batch_size 2 is smaller than the 3 processes"] * 3
    np.testing.assert_array_equal(to_numpy(model.layers[0].W), start)

    def one_row_each(world):  # a batch of as many rows as processes trains
        own = MLP([4, 6, 3], seed=0)
        fit(own, CrossEntropyLoss(), SGD(own), (X, y), epochs=1, batch_size=3,
            comm=MPICommunicator(world))  # fmt: skip
        return to_numpy(own.layers[0].W)

    assert all(not np.array_equal(W, start) for W in job(3).run(one_row_each))
