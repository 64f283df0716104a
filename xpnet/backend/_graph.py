"""Training steps captured as CUDA graphs and replayed (CuPy).

A small model's step is a few dozen short kernels, each launched from Python: the GPU
waits for the launches, not for the arithmetic. A CUDA graph records the step's kernels
once and replays them with one launch. :class:`CudaGraphStep` does this for any step
function whose kernels may be captured, which is what the fused kernels of
:func:`~xpnet.backend.fused` (products included) are.

What replays must see is kept where the graph reads it: the batch is copied into the
graph's own input arrays before each replay; parameters, optimizer buffers and BatchNorm's
running statistics are updated in place; every array allocated while capturing stays
allocated for the graph's lifetime (nothing else may be given its memory, which a replay
writes). Python numbers that the step passes to kernels (the learning rate) are fixed in
the graph: the caller names them in ``key``, and a new key captures anew.
"""

from __future__ import annotations

from ._namespace import placement

__all__ = ["CudaGraphStep", "cuda_graph_step"]


def cuda_graph_step(step, like):
    """A :class:`CudaGraphStep` of ``step`` where ``like``'s library can capture graphs.

    Parameters
    ----------
    step : callable
        ``step(X, y)`` runs one training step and returns the arrays to read after it.
    like : array
        An array on the device that the step runs on (a parameter).

    Returns
    -------
    CudaGraphStep or None
        For CuPy arrays; None for the other libraries.
    """
    lib, _ = placement(like)
    return CudaGraphStep(step, like) if lib == "cupy" else None


class CudaGraphStep:
    """Run a step eagerly the first time for each batch shape, then as a CUDA graph.

    Parameters
    ----------
    step : callable
        ``step(X, y)``: one training step on batch ``X``, ``y``; returns a tuple of arrays
        (the loss, say) that the graph overwrites on every replay.
    like : cupy.ndarray
        An array on the step's device.

    Attributes
    ----------
    eager, captures, replays : int
        Steps run eagerly (the first of each shape), graphs captured, graphs replayed.

    Examples
    --------
    ``fit(..., cuda_graph=True)`` builds one; by hand::

        run = backend.cuda_graph_step(train_step, model.layers[0].W)
        for Xb, yb in batches:
            loss, correct = run(Xb, yb, key=(optimizer.lr,))
    """

    def __init__(self, step, like) -> None:
        import cupy

        self._cupy = cupy
        self._step = step
        self.device = like.device
        self._graphs: dict[tuple, tuple] = {}
        self._seen: set[tuple] = set()
        self._key: object = None
        self.eager = self.captures = self.replays = 0

    def __call__(self, X, y, *, key=None):
        """Run the step on ``X``, ``y``: eagerly the first time for their shape, else as a
        graph (captured on the second time, or when ``key`` changed).

        Parameters
        ----------
        X, y : cupy.ndarray
            The batch.
        key : hashable, optional
            The Python values the step fixes in its kernels (learning rate, momentum...);
            graphs captured under another key are dropped.

        Returns
        -------
        tuple of cupy.ndarray
            What ``step`` returns; from a graph, its own arrays, valid until the next call.
        """
        if key != self._key:
            self._graphs.clear()
            self._key = key
        shape = (tuple(X.shape), tuple(y.shape), X.dtype, y.dtype)
        entry = self._graphs.get(shape)
        if entry is None:
            if shape not in self._seen:  # first: compiles kernels and sizes the memory pool
                self._seen.add(shape)
                self.eager += 1
                return self._step(X, y)
            entry = self._graphs[shape] = self._capture(X, y)
            self.captures += 1
        graph, X_in, y_in, outputs, _ = entry
        cp = self._cupy
        stream = cp.cuda.get_current_stream()
        cp.copyto(X_in, X)
        cp.copyto(y_in, y)
        graph.launch(stream=stream)
        self.replays += 1
        return outputs

    def _capture(self, X, y):
        cp = self._cupy
        X_in, y_in = cp.empty(X.shape, dtype=X.dtype), cp.empty(y.shape, dtype=y.dtype)
        kept = []  # every allocation of the capture, alive as long as the graph
        pool = cp.get_default_memory_pool()

        def keep(size):
            """Allocate from CuPy's pool and keep the memory while the graph lives.

            Parameters
            ----------
            size : int
                Bytes.

            Returns
            -------
            cupy.cuda.MemoryPointer
                The memory.
            """
            memory = pool.malloc(size)
            kept.append(memory)
            return memory

        capture = cp.cuda.Stream(non_blocking=True)
        capture.wait_event(cp.cuda.get_current_stream().record())
        with self.device, cp.cuda.using_allocator(keep), capture:
            capture.begin_capture()
            try:
                outputs = self._step(X_in, y_in)
            finally:
                graph = capture.end_capture()
        return graph, X_in, y_in, outputs, (kept, capture)
