"""xpnet's CUDA kernels run on the CPU, for tests on machines without a GPU.

The kernel source (``xpnet/backend/_kernels.cu``) is compiled as C++ by the system's
compiler, with each CUDA thread of a block run as a host thread and ``__syncthreads`` a
barrier among them; blocks run one after another. :class:`EmulatedCupy` is enough of
CuPy's interface (``RawModule``, ``empty_like``, ``sum``...) over NumPy arrays for
:class:`xpnet.backend.CupyFused` to run unchanged on it, so the kernels and the Python
that launches them are tested here; the GPU check runs the same tests on the device.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path
from typing import ClassVar

import numpy as np

_PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>
using std::erfc; using std::exp; using std::fabs; using std::isnan; using std::log;
using std::nan; using std::sqrt; using std::tanh;
struct Dim { unsigned x = 0, y = 0, z = 0; };
thread_local Dim threadIdx, blockIdx;
Dim blockDim, gridDim;
std::barrier<>* block_barrier = nullptr;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static void launch(unsigned gx, unsigned gy, unsigned bx, unsigned by,
                   const std::function<void()>& body) {
    gridDim = {gx, gy, 1};
    blockDim = {bx, by, 1};
    for (unsigned b = 0; b < gx * gy; ++b) {
        std::barrier<> barrier(bx * by);
        block_barrier = &barrier;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < bx * by; ++t)
            threads.emplace_back([&, t] {
                blockIdx = {b % gx, b / gx, 0};
                threadIdx = {t % bx, t / bx, 0};
                body();
            });
        for (auto& thread : threads) thread.join();
    }
}
"""

_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)', re.S)


def compiler():
    """The C++ compiler's path, or None (the emulated tests then skip)."""
    return shutil.which("g++") or shutil.which("c++")


def _params(text):
    out = []
    for part in " ".join(text.split()).split(","):
        ctype, name = part.strip().rsplit(" ", 1)
        out.append((ctype.strip(), name.strip()))
    return out


def _ctype(ctype, scalar):
    if "*" in ctype:
        return ctypes.c_void_p
    return {"long long": ctypes.c_longlong, "int": ctypes.c_int, "T": scalar}[ctype]


class _Kernel:
    def __init__(self, function, params, scalar):
        self.function, self.params, self.scalar = function, params, scalar
        function.argtypes = [ctypes.c_uint] * 4 + [_ctype(t, scalar) for t, _ in params]
        function.restype = None

    def __call__(self, grid, block, args):
        grid, block = (*grid, 1)[:2], (*block, 1)[:2]
        values = []
        for (ctype, name), arg in zip(self.params, args, strict=True):
            if "*" in ctype:
                assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, name
                values.append(arg.ctypes.data)
            else:
                values.append(arg.item() if isinstance(arg, np.generic) else arg)
        self.function(grid[0], grid[1], block[0], block[1], *values)


class _Module:
    """A RawModule stand-in: the source compiled as C++ (cached by its hash)."""

    _cache: ClassVar[dict[str, ctypes.CDLL]] = {}

    def __init__(self, code, options=()):
        assert "--fmad=false" in options  # the kernels' rounding depends on it
        ctype = re.match(r"typedef (\w+) T;", code).group(1)  # type: ignore[union-attr]
        self.scalar = {"float": ctypes.c_float, "double": ctypes.c_double}[ctype]
        self.signatures = {name: _params(text) for name, text in _SIGNATURE.findall(code)}
        wrappers = []
        for name, params in self.signatures.items():
            decl = ", ".join(f"{t} {n}" for t, n in params)
            call = ", ".join(n for _, n in params)
            wrappers.append(
                f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned bx, '
                f"unsigned by, {decl}) {{ launch(gx, gy, bx, by, [&] {{ {name}({call}); }}); }}"
            )
        source = f"{_PRELUDE}\n{code}\n" + "\n".join(wrappers)
        if source not in self._cache:
            self._cache[source] = _compiled(source, "kernels", "-std=c++20", "-pthread")
        self.library = self._cache[source]

    def get_function(self, name):
        return _Kernel(getattr(self.library, f"launch_{name}"), self.signatures[name], self.scalar)


def _compiled(source, name, *flags):
    """``source`` compiled as a shared C++ library, once per content (cached on disk)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "xpnet-cuda-emulation"
    folder.mkdir(exist_ok=True)
    library = folder / f"{name}-{key}.so"
    if not library.exists():
        src = folder / f"{name}-{key}.cpp"
        src.write_text(source)
        partial = folder / f"{name}-{key}.{id(src)}.tmp"
        subprocess.run(
            [compiler(), *flags, "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-o",
             str(partial), str(src)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        partial.replace(library)
    return ctypes.CDLL(str(library))


def emulated_cupy():
    """A namespace with the part of CuPy's interface that ``CupyFused`` uses, over NumPy."""
    return types.SimpleNamespace(
        RawModule=_Module,
        empty=np.empty,
        empty_like=np.empty_like,
        zeros=np.zeros,
        ascontiguousarray=np.ascontiguousarray,
        sum=lambda x: np.asarray(np.sum(x)),
        int64=np.int64,
    )


_CUBLAS = r"""
// The cuBLAS calls xpnet makes, on the CPU: column-major C = alpha op(A) op(B) + beta C.
#include <cstddef>
struct Handle { void* stream = nullptr; void* workspace = nullptr; size_t size = 0; int mode = 0; };
template <typename T>
static int gemm(Handle* h, int ta, int tb, int m, int n, int k, const T* alpha, const T* A,
                int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
    if (!h) return 1;  // CUBLAS_STATUS_NOT_INITIALIZED
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return 7;  // INVALID_VALUE
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            T sum = 0;
            for (int p = 0; p < k; ++p) {
                T a = ta ? A[p + i * lda] : A[i + p * lda];
                sum += a * (tb ? B[j + p * ldb] : B[p + j * ldb]);
            }
            C[i + j * ldc] = *alpha * sum + (*beta == 0 ? T(0) : *beta * C[i + j * ldc]);
        }
    return 0;
}
extern "C" {
int cublasCreate_v2(Handle** h) { *h = new Handle; return 0; }
int cublasSetStream_v2(Handle* h, void* s) { h->stream = s; return 0; }
int cublasSetWorkspace_v2(Handle* h, void* w, size_t n) { h->workspace = w; h->size = n; return 0; }
int cublasSetMathMode(Handle* h, int mode) { h->mode = mode; return 0; }
int emulated_math_mode(Handle* h) { return h->mode; }
int cublasSgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha,
                   const float* A, int lda, const float* B, int ldb, const float* beta,
                   float* C, int ldc) {
    return gemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
int cublasDgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const double* alpha,
                   const double* A, int lda, const double* B, int ldb, const double* beta,
                   double* C, int ldc) {
    return gemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
}
"""


class DeviceArray(np.ndarray):
    """A NumPy array that shows its address as CuPy's arrays do (``x.data.ptr``)."""

    @property
    def data(self):  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.ctypes.data)


def emulated_cublas():
    """(library, cupy): a cuBLAS stand-in compiled from C++ (the calls xpnet makes, as
    CPU loops), and enough of CuPy for :class:`xpnet.backend._fused._Cublas` over it."""
    stream = types.SimpleNamespace(ptr=0)
    cupy = types.SimpleNamespace(
        empty=lambda shape, dtype: np.empty(shape, dtype=dtype).view(DeviceArray),
        uint8=np.uint8,
        cuda=types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDevice=lambda: 0),
            get_current_stream=lambda: stream,
        ),
    )
    return _compiled(_CUBLAS, "cublas"), cupy
