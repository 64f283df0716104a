"""Fused kernels: a library's one-pass versions of the array code of ``xpnet.nn``.

:func:`fused` is the capability: for a namespace whose library has fused kernels (CuPy,
on a CUDA GPU) it returns a :class:`CupyFused`, else None. :func:`xpnet.executors.make_step`
asks it, and where it answers runs a model's step as :class:`xpnet.fused.FusedPlan`,
which sequences these operations over the model's modules; the modules themselves never
see them. Each operation computes what the module's own array code computes (the tests
compare them through the CPU emulation, the GPU check on the device):

======================  ==================================================  =========
operation               replaces                                            kernels
======================  ==================================================  =========
bias + activation       ``Z = A Wᵀ + b`` after the product, and ``f(Z)``    1 (2-6)
activation backward     ``dLdA * f'(Z)``                                    1 (2-7)
bias gradient           ``sum(dLdZ, axis=0)``                               2 (1)
BatchNorm forward       batch mean, variance, running statistics, affine;    5 (17)
                        in an MLP also the bias before it and the
                        activation after it (``Z + b`` and ``BZ`` unwritten)
BatchNorm backward      ``dLdBW``, ``dLdBb``, ``dLdZ``                        3 (10)
cross-entropy           softmax, loss of integer labels; its gradient       2+1 (13)
right predictions       ``sum(argmax(A, axis=1) == y)``                      2 (4)
SGD update              weight decay, momentum, Nesterov, the step          1 (5)
matrix products         ``@`` (cuBLAS through an own handle: graph-safe)    1 (1)
======================  ==================================================  =========

The counts are per layer, per loss, or per parameter for SGD (which works on each
parameter's view of the optimizer's flat buffer and so copies no gradient). Column
reductions (bias gradients, BatchNorm's statistics and sums) take two kernels: chunks of
rows summed in parallel, so that a wide batch fills the GPU, then the chunks' sums added in
order, so that the result depends on the shape alone, never on timing.

The element-wise kernels do the array code's operations in its order without fused
multiply-adds, so they round as it does; the reductions (BatchNorm's statistics and
sums, the softmax's row sums) add in their own order, as any two reductions may.
``XPNET_FUSED=0`` in the environment, or :func:`use_fused` ``(False)``, turns them off
(every step is then the readable one).
"""

from __future__ import annotations

import contextlib
import math
import os
from importlib import resources
from typing import Any

import numpy as np

from ._capabilities import _library
from ._namespace import library_name

__all__ = ["KERNEL_ACTIVATIONS", "CupyFused", "fused", "set_tf32", "use_fused"]

#: The activations with fused kernels: their codes in ``_kernels.cu``, by the names that
#: ``xpnet.fused.FUSED_ACTIVATIONS`` gives their classes.
KERNEL_ACTIVATIONS = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4}

#: GELU's constants, computed in double as xpnet.nn.GELU computes them (its kernels take
#: them as arguments, so that both round the same arguments the same way)
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_THREADS = 256
_MAX_BLOCKS = 4096  # grid-stride loops cover the rest
_REDUCTION_BLOCKS = 1024  # column reductions: blocks of 256 threads enough to fill a GPU
_CHUNK_ROWS = 64  # ... while each block still sums at least this many rows
_ONE_CHUNK_ROWS = 256  # up to this many rows, one chunk: one launch, no chunk totals
_SGD_GROUP = 8  # parameters per launch of sgd_update_group (its gradient arguments)
_enabled = os.environ.get("XPNET_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")
_CUPY: CupyFused | None = None


@contextlib.contextmanager
def use_fused(enabled: bool = True):
    """Turn the fused kernels on or off inside a ``with`` block (for comparisons).

    Parameters
    ----------
    enabled : bool
        False: :func:`xpnet.executors.make_step` gives the readable step on every library.

    Yields
    ------
    None
        Inside the block, :func:`fused` answers as ``enabled`` says.

    Examples
    --------
    >>> from xpnet import backend
    >>> with backend.use_fused(False):
    ...     backend.fused(backend.get("numpy")) is None
    True
    """
    global _enabled
    before, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = before


def fused(xp):
    """The fused kernels of ``xp``'s library, or None where it has none.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    CupyFused or None
        For CuPy (unless turned off); None for every other library.
    """
    if not _enabled:
        return None
    if _library(xp) != "cupy":
        return None
    global _CUPY
    if _CUPY is None:
        _CUPY = CupyFused()
    return _CUPY


# cuBLAS's constants and its column-major products of row-major arrays
_GEMM = {  # keyed by dtype, not its name: a dtype's .name is a Python property, slow per call
    np.dtype(np.float32): ("cublasSgemm_v2", "c_float"),
    np.dtype(np.float64): ("cublasDgemm_v2", "c_double"),
}
_OP_N, _OP_T = 0, 1
_DEFAULT_MATH, _TF32_TENSOR_OP_MATH = 0, 3
_WORKSPACE = 32 << 20  # bytes; set once, as graph capture requires


class _Cublas:
    """cuBLAS through ctypes, on the library CuPy has loaded, with a handle per device."""

    def __init__(self, library):
        import ctypes

        self._ctypes, self._lib = ctypes, library
        self._handles: dict[int, list] = {}  # device id -> [handle, stream ptr, math mode, ws]
        # per dtype: the gemm function with its argument types declared (ctypes then takes
        # Python ints as they are, no wrapper objects per call), and pointers to 1 and 0
        self._gemms: dict[Any, tuple] = {}
        c = ctypes
        for dtype, (name, scalar_name) in _GEMM.items():
            try:
                function = getattr(library, name)
            except AttributeError:
                continue
            scalar = getattr(c, scalar_name)
            function.argtypes = [
                c.c_void_p, c.c_int, c.c_int, c.c_int, c.c_int, c.c_int, c.c_void_p,
                c.c_void_p, c.c_int, c.c_void_p, c.c_int, c.c_void_p, c.c_void_p, c.c_int,
            ]  # fmt: skip
            function.restype = c.c_int
            one, zero = scalar(1.0), scalar(0.0)
            self._gemms[dtype] = (
                function,
                name,
                scalar,
                c.addressof(one),
                c.addressof(zero),
                (one, zero),
            )

    @classmethod
    def load(cls, cupy):
        """The cuBLAS that CuPy uses, or None (a stand-in CuPy, or no such library)."""
        import ctypes

        try:
            cupy.cuda.device.get_cublas_handle()  # loads cuBLAS if CuPy has not yet
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "libcublas.so" in line}
        except (AttributeError, OSError):
            return None
        for path in sorted(paths):
            try:
                return cls(ctypes.CDLL(path))
            except OSError:
                continue
        return None

    def supports(self, dtype) -> bool:
        """Whether the library has a product of ``dtype``."""
        return dtype in self._gemms

    def _call(self, name, *args):
        status = getattr(self._lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed with cuBLAS status {status}")

    def _handle(self, cupy, tf32):
        c = self._ctypes
        device = cupy.cuda.runtime.getDevice()
        entry = self._handles.get(device)
        if entry is None:
            handle = c.c_void_p()
            self._call("cublasCreate_v2", c.byref(handle))
            workspace = cupy.empty((_WORKSPACE,), dtype=cupy.uint8)
            entry = self._handles[device] = [handle, None, None, workspace]
        handle = entry[0]
        stream = cupy.cuda.get_current_stream().ptr
        if entry[1] != stream:  # setting the stream resets the workspace: set both
            self._call("cublasSetStream_v2", handle, c.c_void_p(stream))
            self._call(
                "cublasSetWorkspace_v2", handle, c.c_void_p(entry[3].data.ptr),
                c.c_size_t(_WORKSPACE),
            )  # fmt: skip
            entry[1] = stream
        mode = _TF32_TENSOR_OP_MATH if tf32 else _DEFAULT_MATH
        if entry[2] != mode:
            self._call("cublasSetMathMode", handle, c.c_int(mode))
            entry[2] = mode
        return handle

    def gemm(self, cupy, A, B, trans_a, trans_b, tf32):
        c = self._ctypes
        M, K = (A.shape[1], A.shape[0]) if trans_a else A.shape
        K2, N = (B.shape[1], B.shape[0]) if trans_b else B.shape
        if K != K2:
            raise ValueError(f"matmul: shapes {A.shape} and {B.shape} do not match")
        out = cupy.empty((M, N), dtype=A.dtype)
        if M == 0 or N == 0:
            return out
        if K == 0:
            out.fill(0)
            return out
        function, name, scalar, one, zero, _ = self._gemms[A.dtype]
        handle = self._handle(cupy, tf32 and scalar is c.c_float)
        # row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ; a row-major matrix
        # read column-major is its transpose, with its row length as leading dimension
        status = function(
            handle, _OP_T if trans_b else _OP_N, _OP_T if trans_a else _OP_N, N, M, K, one,
            B.data.ptr, B.shape[1], A.data.ptr, A.shape[1], zero, out.data.ptr, N,
        )  # fmt: skip
        if status != 0:
            raise RuntimeError(f"{name} failed with cuBLAS status {status}")
        return out


_TF32 = {"cupy": False}


def set_tf32(xp, enabled: bool) -> bool:
    """Let ``xp``'s float32 matrix products use TF32 tensor cores, or not.

    TF32 rounds the products' inputs to 10 bits of mantissa (float32 keeps 23) and adds
    in float32: several times faster on NVIDIA GPUs since Ampere, less precise. Off by
    default, as in PyTorch; the setting is the library's, for the whole process. It
    changes nothing on a CPU, nor for float64.

    Parameters
    ----------
    xp : namespace
        An Array API namespace: CuPy (xpnet's own products and CuPy's) or PyTorch
        (``torch.backends.cuda.matmul.allow_tf32``); no effect on the others.
    enabled : bool
        The new setting.

    Returns
    -------
    bool
        The previous setting (False for a library without one).
    """
    try:
        name = library_name(xp)
    except TypeError:
        return False
    enabled = bool(enabled)
    if name == "torch":
        import torch

        before = bool(torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = enabled
        return before
    if name != "cupy":
        return False
    before, _TF32["cupy"] = _TF32["cupy"], enabled  # read by CupyFused.matmul
    try:  # CuPy's own products (those xpnet's kernels do not replace)
        from cupy._core import _routines_linalg as linalg

        mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
        linalg.set_compute_type(np.dtype(np.float32), mode)
    except (ImportError, AttributeError):
        pass
    return before


def _blocks(n):
    return (max(1, min(_MAX_BLOCKS, -(-n // _THREADS))),)


class CupyFused:
    """The fused kernels of xpnet on CuPy arrays, compiled once per floating type.

    Every method takes arrays of one floating type (the model's) on the current device
    and queues its kernels on the current stream; none reads a value back.

    Parameters
    ----------
    cupy : module, optional
        CuPy (imported by default); the tests pass a stand-in that runs the kernels on
        the CPU.

    Examples
    --------
    The fused plan (:class:`xpnet.fused.FusedPlan`) calls it for a model on CuPy::

        ops = backend.fused(xp)          # None on NumPy
        if ops is not None:
            A = ops.bias_activation(Z, b, "relu")["A"]
    """

    def __init__(self, cupy=None) -> None:
        if cupy is None:
            import cupy as library

            cupy = library
        self._cupy = cupy
        self._source = resources.files(__package__).joinpath("_kernels.cu").read_text()
        self._modules: dict[str, Any] = {}
        self._functions: dict[tuple, Any] = {}
        self._blas_lib: _Cublas | None = None
        self._blas_loaded = False

    @staticmethod
    def handles(x) -> bool:
        """Whether the kernels take ``x``'s dtype (float32 and float64; float16 does not).

        Parameters
        ----------
        x : cupy.ndarray
            An array.

        Returns
        -------
        bool
            True for float32 and float64.
        """
        return x.dtype in _GEMM

    @property
    def _blas(self):
        if not self._blas_loaded:
            self._blas_lib, self._blas_loaded = _Cublas.load(self._cupy), True
        return self._blas_lib

    def matmul(self, A, B, trans_a=False, trans_b=False):
        """``op(A) @ op(B)``, ``op`` transposing where asked, through an own cuBLAS handle.

        CuPy's own products refuse to run while a CUDA graph is captured; this one runs
        there too (:class:`CudaGraphStep`), and eager steps use it as well so that both
        compute the same numbers. Without a cuBLAS library it falls back to ``@``.

        Parameters
        ----------
        A, B : cupy.ndarray
            2-d arrays of one floating type.
        trans_a, trans_b : bool
            Use ``A.T`` (``B.T``) in place of ``A`` (``B``).

        Returns
        -------
        cupy.ndarray
            The C-contiguous product.
        """
        blas = self._blas
        if blas is None or A.dtype != B.dtype or not blas.supports(A.dtype):
            return (A.T if trans_a else A) @ (B.T if trans_b else B)
        return blas.gemm(
            self._cupy, self._contiguous(A), self._contiguous(B), trans_a, trans_b,
            _TF32["cupy"],
        )  # fmt: skip

    def _kernel(self, name, dtype):
        function = self._functions.get((name, dtype))
        if function is None:  # compiled once per floating type, looked up once per kernel
            key = np.dtype(dtype).name
            module = self._modules.get(key)
            if module is None:
                ctype = {"float32": "float", "float64": "double"}[key]
                module = self._cupy.RawModule(
                    code=f"typedef {ctype} T;\n{self._source}", options=("--fmad=false",)
                )
                self._modules[key] = module
            function = self._functions[(name, dtype)] = module.get_function(name)
        return function

    def _scalar(self, value, dtype):
        return np.dtype(dtype).type(value)

    def _contiguous(self, x):
        return self._cupy.ascontiguousarray(x)

    def bias_activation(self, Z, b, kind):
        """``f(Z + bᵀ)``, or ``f(Z)`` without a bias, with what the activation caches.

        Parameters
        ----------
        Z : cupy.ndarray
            ``(N, C)``: a layer's product ``A Wᵀ``; without a bias, any shape.
        b : cupy.ndarray or None
            ``(C, 1)`` bias.
        kind : str
            A key of :data:`KERNEL_ACTIVATIONS`.

        Returns
        -------
        dict
            ``{"A": f(Z + bᵀ)}``; for ``"gelu"`` also ``"Z"`` (``Z + bᵀ``) and ``"cdf"``.
        """
        cp = self._cupy
        Z = self._contiguous(Z)
        n, C = Z.size, Z.shape[-1] if b is not None else 1
        A = cp.empty_like(Z)
        gelu = kind == "gelu"
        z_out = cp.empty_like(Z) if gelu else A
        cdf = cp.empty_like(Z) if gelu else A
        bias = self._contiguous(b) if b is not None else A
        self._kernel("bias_activation", Z.dtype)(
            _blocks(n), (_THREADS,),
            (Z, bias, A, z_out, cdf, np.int64(n), np.int32(C), np.int32(b is not None),
             np.int32(KERNEL_ACTIVATIONS[kind]), self._scalar(-SQRT1_2, Z.dtype)),
        )  # fmt: skip
        return {"A": A, "Z": z_out, "cdf": cdf} if gelu else {"A": A}

    def activation_backward(self, kind, dLdA, A=None, Z=None, cdf=None):
        """``dLdZ = dLdA * f'(Z)`` from the activation's caches.

        Parameters
        ----------
        kind : str
            A key of :data:`KERNEL_ACTIVATIONS` other than ``"identity"``.
        dLdA : cupy.ndarray
            The gradient with respect to the output.
        A, Z, cdf : cupy.ndarray, optional
            The caches: ``A`` for relu, sigmoid and tanh; ``Z`` and ``cdf`` for gelu.

        Returns
        -------
        cupy.ndarray
            ``dLdZ``.
        """
        cp = self._cupy
        dLdA = self._contiguous(dLdA)
        dZ = cp.empty_like(dLdA)
        args = self._activation_inputs(A, Z, cdf, fallback=dLdA)
        self._kernel("activation_backward", dLdA.dtype)(
            _blocks(dLdA.size), (_THREADS,),
            (dLdA, *args, dZ, np.int64(dLdA.size), np.int32(KERNEL_ACTIVATIONS[kind]),
             self._scalar(INV_SQRT_2PI, dLdA.dtype)),
        )  # fmt: skip
        return dZ

    def activation_backward_with_sums(self, kind, dLdA, A=None, Z=None, cdf=None):
        """:meth:`activation_backward` of a 2-d ``dLdA`` and the column sums of the result.

        One pass for what a layer's backward needs after its activation: ``dLdZ`` and
        ``Σ_n dLdZ`` (its bias gradient), summed exactly as :meth:`column_sums` sums.

        Parameters
        ----------
        kind : str
            A key of :data:`KERNEL_ACTIVATIONS` other than ``"identity"``.
        dLdA : cupy.ndarray
            ``(N, C)`` gradient with respect to the output.
        A, Z, cdf : cupy.ndarray, optional
            The caches, as for :meth:`activation_backward`.

        Returns
        -------
        dLdZ : cupy.ndarray
            ``(N, C)``.
        sums : cupy.ndarray
            ``(1, C)``.
        """
        cp = self._cupy
        dLdA = self._contiguous(dLdA)
        N, C = dLdA.shape
        if N == 0:
            return self.activation_backward(kind, dLdA, A, Z, cdf), self.column_sums(dLdA)
        dZ = cp.empty_like(dLdA)
        args = self._activation_inputs(A, Z, cdf, fallback=dLdA)
        chunks = self._chunks(N, C)
        partial = cp.empty((1, chunks, C), dtype=dLdA.dtype)
        self._kernel("activation_backward_columns", dLdA.dtype)(
            (-(-C // 32), chunks), (32, 8),
            (dLdA, *args, dZ, np.int64(N), np.int32(C), np.int32(KERNEL_ACTIVATIONS[kind]),
             self._scalar(INV_SQRT_2PI, dLdA.dtype), partial),
        )  # fmt: skip
        return dZ, self._chunk_totals(partial, chunks)

    def _activation_inputs(self, A=None, Z=None, cdf=None, *, fallback):
        """An activation's caches as kernel arguments; absent ones point at any array (the
        kernel reads only those of its kind)."""
        present = next((x for x in (A, Z) if x is not None), fallback)
        return [self._contiguous(x) if x is not None else present for x in (A, Z, cdf)]

    def _chunk_totals(self, partial, chunks):
        """Each column's total of the chunks' sums ``(groups, chunks, C)``: with one chunk,
        its sums themselves (``0 + s`` is ``s``), else :meth:`_column_totals`."""
        groups, _, C = partial.shape
        return partial.reshape(groups, C) if chunks == 1 else self._column_totals(partial, chunks)

    def _chunks(self, N, C):
        """How many chunks of rows a column reduction of an (N, C) array splits into."""
        if N <= _ONE_CHUNK_ROWS:  # 32 rows a thread at most: less than a second launch costs
            return 1
        blocks = -(-C // 32)
        return max(1, min(-(-_REDUCTION_BLOCKS // blocks), -(-N // _CHUNK_ROWS)))

    def _column_reduce(self, X, *, divisor=1.0):
        """Column sums of a 2-d ``X`` over all rows, divided by ``divisor``: ``(1, C)``.

        One launch of ``column_partials`` when the rows make one chunk (its sums, divided
        there, are the totals), else its chunks' sums and their totals.
        """
        N, C = X.shape
        chunks = self._chunks(N, C)
        partial = self._cupy.empty((1, chunks, C), dtype=X.dtype)
        self._kernel("column_partials", X.dtype)(
            (-(-C // 32), chunks), (32, 8),
            (X, np.int64(N), np.int32(C),
             self._scalar(divisor if chunks == 1 else 1.0, X.dtype), partial),
        )  # fmt: skip
        if chunks == 1:
            return partial.reshape(1, C)
        return self._column_totals(partial, chunks, divisor)

    def _column_totals(self, partial, chunks, divisor=1.0):
        groups, _, C = partial.shape
        out = self._cupy.empty((groups, C), dtype=partial.dtype)
        self._kernel("column_totals", partial.dtype)(
            _blocks(groups * C), (_THREADS,),
            (partial, np.int32(chunks), np.int32(C), np.int32(groups),
             self._scalar(divisor, partial.dtype), out),
        )  # fmt: skip
        return out

    def column_sums(self, X):
        """``sum(X, axis=0, keepdims=True)`` of a 2-d ``X``: a layer's bias gradient.

        Parameters
        ----------
        X : cupy.ndarray
            ``(N, C)``.

        Returns
        -------
        cupy.ndarray
            ``(1, C)``.
        """
        X = self._contiguous(X)
        if X.shape[0] == 0:
            return self._cupy.zeros((1, X.shape[1]), dtype=X.dtype)
        return self._column_reduce(X)

    def batchnorm_forward(
        self, Z, BW, Bb, running_M, running_V, alpha, eps, *, bias=None, activation=None
    ):
        """BatchNorm in training mode over the rows of ``Z`` (or of ``Z + biasᵀ``).

        Parameters
        ----------
        Z : cupy.ndarray
            ``(N, C)`` input.
        BW, Bb, running_M, running_V : cupy.ndarray
            ``(1, C)`` scale, shift and running statistics.
        alpha, eps : float
            The running statistics' weight of the past, and the variance's offset.
        bias : cupy.ndarray, optional
            ``(C, 1)``: normalise ``Z + biasᵀ``, added where it is read (a Linear
            layer's bias, never written out).
        activation : str, optional
            A key of :data:`KERNEL_ACTIVATIONS`: also apply it to ``BZ`` in the same pass.

        Returns
        -------
        dict
            ``M``, ``V``, ``inv_std`` (``(1, C)``) and ``NZ`` (``(N, C)``); ``BZ``
            without an activation, else ``A`` (and for ``"gelu"`` also ``Z``, which is
            ``BZ``, and ``cdf``). The running statistics are updated in place (so a CUDA
            graph's replays see them).
        """
        cp = self._cupy
        Z = self._contiguous(Z)
        N, C = Z.shape
        dtype = Z.dtype
        for running in (running_M, running_V):
            if not running.flags.c_contiguous:
                raise ValueError("batchnorm_forward: running statistics must be contiguous")
        # one pass for the mean and the variance (Welford's updates of values shifted by
        # each column's first, Chan's merges of threads and chunks in a fixed order): the
        # array code reads Z twice
        chunks = self._chunks(N, C)
        partial = cp.empty((2, chunks, C), dtype=dtype)
        b = self._contiguous(bias) if bias is not None else Z
        has_bias = np.int32(bias is not None)
        self._kernel("column_moments", dtype)(
            (-(-C // 32), chunks), (32, 8), (Z, b, np.int64(N), np.int32(C), has_bias, partial)
        )
        M, V, inv_std = (cp.empty((1, C), dtype=dtype) for _ in range(3))
        self._kernel("batchnorm_statistics", dtype)(
            _blocks(C), (_THREADS,),
            (partial, Z, b, has_bias, np.int32(chunks), np.int32(C), np.int64(N), M, V,
             inv_std, running_M, running_V, self._scalar(alpha, dtype),
             self._scalar(1.0 - alpha, dtype), self._scalar(eps, dtype)),
        )  # fmt: skip
        NZ = cp.empty_like(Z)
        kind = -1 if activation is None else KERNEL_ACTIVATIONS[activation]
        gelu = activation == "gelu"
        BZ = cp.empty_like(Z) if kind < 0 or gelu else NZ  # NZ: a pointer never written
        A = cp.empty_like(Z) if kind >= 0 else NZ
        cdf = cp.empty_like(Z) if gelu else NZ
        self._kernel("batchnorm_apply", dtype)(
            _blocks(Z.size), (_THREADS,),
            (Z, self._contiguous(bias) if bias is not None else Z, M, inv_std,
             self._contiguous(BW), self._contiguous(Bb), NZ, BZ, A, cdf, np.int64(Z.size),
             np.int32(C), np.int32(bias is not None), np.int32(kind),
             self._scalar(-SQRT1_2, dtype)),
        )  # fmt: skip
        out = {"M": M, "V": V, "inv_std": inv_std, "NZ": NZ}
        if kind < 0:
            out["BZ"] = BZ
        else:
            out["A"] = A
            if gelu:
                out.update(Z=BZ, cdf=cdf)
        return out

    def batchnorm_backward(self, dLdBZ, NZ, BW, inv_std):
        """BatchNorm's gradients in training mode (the batch statistics depend on ``Z``).

        Parameters
        ----------
        dLdBZ : cupy.ndarray
            ``(N, C)`` gradient with respect to the output.
        NZ : cupy.ndarray
            ``(N, C)`` normalised input of the forward pass.
        BW, inv_std : cupy.ndarray
            ``(1, C)`` scale and ``1/sqrt(V + eps)``.

        Returns
        -------
        dLdZ : cupy.ndarray
            ``(N, C)``.
        dLdBW : cupy.ndarray
            ``(1, C)``.
        dLdBb : cupy.ndarray
            ``(1, C)``.
        """
        dLdZ, dLdBW, dLdBb, _ = self._batchnorm_backward("identity", dLdBZ, NZ, BW, inv_std)
        return dLdZ, dLdBW, dLdBb

    def batchnorm_backward_activated(self, kind, dLdA, NZ, BW, inv_std, A=None, Z=None, cdf=None):
        """BatchNorm's backward with the activation's inside and the column sums of dLdZ.

        :meth:`activation_backward`, then :meth:`batchnorm_backward`, then the column sums
        of the result, in two passes over the batch instead of four: what an MLP's layer
        with BatchNorm needs in backward (the gradient through the activation after
        BatchNorm, never written out, BatchNorm's, and the bias gradient of the Linear
        layer before it), bit for bit what the separate kernels give.

        Parameters
        ----------
        kind : str
            A key of :data:`KERNEL_ACTIVATIONS`.
        dLdA : cupy.ndarray
            ``(N, C)`` gradient with respect to the activation's output.
        NZ : cupy.ndarray
            ``(N, C)`` normalised input of BatchNorm's forward pass.
        BW, inv_std : cupy.ndarray
            ``(1, C)`` scale and ``1/sqrt(V + eps)``.
        A, Z, cdf : cupy.ndarray, optional
            The activation's caches, as for :meth:`activation_backward`.

        Returns
        -------
        dLdZ : cupy.ndarray
            ``(N, C)``, BatchNorm's input gradient.
        dLdBW, dLdBb : cupy.ndarray
            ``(1, C)``.
        sums : cupy.ndarray
            ``(1, C)``: ``Σ_n dLdZ``.
        """
        return self._batchnorm_backward(kind, dLdA, NZ, BW, inv_std, (A, Z, cdf), column_sums=True)

    def _batchnorm_backward(self, kind, dLdA, NZ, BW, inv_std, caches=(), *, column_sums=False):
        """Both BatchNorm backwards: two passes in column_partials' layout, the second
        writing ``dLdZ`` and the chunks' sums of it (added up with ``column_sums``)."""
        cp = self._cupy
        G = self._contiguous(dLdA)
        N, C = G.shape
        dtype = G.dtype
        NZ = self._contiguous(NZ)
        args = self._activation_inputs(*caches, fallback=G)
        chunks = self._chunks(N, C)
        grid, common = (-(-C // 32), chunks), (np.int32(KERNEL_ACTIVATIONS[kind]),
                                               self._scalar(INV_SQRT_2PI, dtype))  # fmt: skip
        partial = cp.empty((2, chunks, C), dtype=dtype)
        self._kernel("batchnorm_backward_partials", dtype)(
            grid, (32, 8), (G, *args, NZ, np.int64(N), np.int32(C), *common, partial)
        )
        sums = self._chunk_totals(partial, chunks)
        sum_w, sum_b = sums[0:1], sums[1:2]
        dZ = cp.empty_like(G)
        columns = cp.empty((1, chunks, C), dtype=dtype)
        self._kernel("batchnorm_backward_columns", dtype)(
            grid, (32, 8),
            (G, *args, NZ, sum_w, sum_b, self._contiguous(BW), self._contiguous(inv_std), dZ,
             np.int64(N), np.int32(C), *common, self._scalar(N, dtype), columns),
        )  # fmt: skip
        return dZ, sum_w, sum_b, self._chunk_totals(columns, chunks) if column_sums else None

    def cross_entropy(self, A, labels):
        """Softmax cross-entropy of logits ``A`` against integer labels, with its gradient.

        One pass over the logits for the loss, the probabilities and the gradient.

        Parameters
        ----------
        A : cupy.ndarray
            ``(N, C)`` logits.
        labels : cupy.ndarray
            ``(N,)`` integer labels, already known to lie in ``[0, C)``.

        Returns
        -------
        loss : cupy.ndarray
            The mean loss, 0-d.
        softmax : cupy.ndarray
            The ``(N, C)`` probabilities.
        gradient : cupy.ndarray
            ``(softmax - onehot(labels)) / N``, the gradient of the mean loss.
        """
        cp = self._cupy
        A = self._contiguous(A)
        N, C = A.shape
        S, G = cp.empty_like(A), cp.empty_like(A)
        rows = cp.empty((N,), dtype=A.dtype)
        y = self._contiguous(labels.astype(cp.int64, copy=False))
        self._kernel("cross_entropy_rows", A.dtype)(
            (N,), (128,), (A, y, S, rows, G, np.int32(C), self._scalar(N, A.dtype))
        )
        # the rows' mean in one column reduction: one launch up to 256 rows, in a fixed order
        loss = self._column_reduce(rows.reshape(N, 1), divisor=float(N)).reshape(())
        return loss, S, G

    def count_correct(self, A, labels):
        """How many rows of ``A`` have their largest value at their label (as ``argmax``).

        Parameters
        ----------
        A : cupy.ndarray
            ``(N, C)`` scores.
        labels : cupy.ndarray
            ``(N,)`` integer labels.

        Returns
        -------
        cupy.ndarray
            The count, 0-d, of ``A``'s dtype.
        """
        cp = self._cupy
        A = self._contiguous(A)
        hits = cp.empty((A.shape[0],), dtype=A.dtype)
        y = self._contiguous(labels.astype(cp.int64, copy=False))
        self._kernel("argmax_hits", A.dtype)(
            (A.shape[0],), (128,), (A, y, hits, np.int32(A.shape[1]))
        )
        return cp.sum(hits)

    def sgd_update_group(self, P, V, grads, *, lr, momentum, weight_decay, nesterov):
        """SGD's update of flat ``P`` and ``V`` from one gradient array per parameter.

        The parameters lie one after another in ``P`` (and their velocities in ``V``), in
        the order of ``grads``; a launch updates up to eight of them, so a
        model's whole update is one or two kernels rather than one per parameter. Each
        element is updated as SGD's array code does it, in its order and rounding.

        Parameters
        ----------
        P, V : cupy.ndarray
            Flat (1-d, contiguous) parameters and velocity.
        grads : sequence of cupy.ndarray
            The gradients, any shape; their sizes must add up to ``P.size``.
        lr, momentum, weight_decay : float
            The step's hyperparameters.
        nesterov : bool
            Nesterov momentum.

        Raises
        ------
        ValueError
            The gradients' sizes do not add up to ``P``'s, or an array is of another dtype.
        """
        dtype = P.dtype
        grads = [self._contiguous(g) for g in grads]
        total = sum(g.size for g in grads)
        if total != P.size or V.size != P.size:
            raise ValueError(
                f"sgd_update_group: {len(grads)} gradients of {total} values in all for "
                f"{P.size} parameters and {V.size} velocities"
            )
        if V.dtype != dtype or any(g.dtype != dtype for g in grads):
            raise ValueError(f"sgd_update_group: every array must be of the parameters' {dtype}")
        tail = (
            self._scalar(lr, dtype), self._scalar(momentum, dtype),
            self._scalar(weight_decay, dtype), np.int32(bool(weight_decay)),
            np.int32(bool(momentum)), np.int32(bool(nesterov)),
        )  # fmt: skip
        kernel = self._kernel("sgd_update_group", dtype)
        first = 0
        for k in range(0, len(grads), _SGD_GROUP):
            group = grads[k : k + _SGD_GROUP]
            ends, end = [], 0
            for g in group:
                end += g.size
                ends.append(np.int64(end))
            if end == 0:
                continue
            pad = _SGD_GROUP - len(group)
            kernel(
                _blocks(end), (_THREADS,),
                (P, V, np.int64(first), *group, *[group[0]] * pad, *ends, *[ends[-1]] * pad,
                 *tail),
            )  # fmt: skip
            first += end
