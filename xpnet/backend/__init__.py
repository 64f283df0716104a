"""The only part of xpnet that knows concrete array libraries.

Namespace and device resolution, dtypes, the host RNG, conversion between libraries, and
library fast paths that compute the same function as their generic Array API version,
and the fused CUDA kernels (:func:`fused`).
"""

from ._capabilities import (
    allow_float64,
    blockwise,
    check_float64,
    flat_views,
    inplace_updates,
    quiet_float_errors,
)
from ._collective import NCCLSum, nccl_unique_id, nccl_usable, rank_device
from ._compile import Compiler, compiler
from ._convert import (
    FLOAT_DTYPES,
    convert,
    dtype_name,
    is_floating,
    is_integral,
    resolve_dtype,
    to_numpy,
)
from ._fused import KERNEL_ACTIVATIONS, CupyFused, fused, set_tf32, use_fused
from ._graph import CudaGraphStep, cuda_graph_step
from ._lazy import compute_together, computed_blocks, dask_scheduler, lazy_rows
from ._namespace import (
    DISTRIBUTIONS,
    NAMED,
    SUPPORTED,
    available,
    compat_version,
    default_device,
    device,
    device_name,
    devices,
    get,
    library_name,
    library_version,
    memory_bytes,
    namespace,
    on_host,
    out_of_memory,
    placement,
    report,
    resolve_device,
    synchronize,
)
from ._prefetch import PinnedPrefetcher, gather_rows, gather_threads, prefetcher
from ._random import host_rng, host_uniform
from ._special import erf, erf_generic, erfc, erfc_generic
from ._trace import onnx_graph, onnx_op, symbolic_input

__all__ = [
    "DISTRIBUTIONS",
    "FLOAT_DTYPES",
    "KERNEL_ACTIVATIONS",
    "NAMED",
    "SUPPORTED",
    "Compiler",
    "CudaGraphStep",
    "CupyFused",
    "NCCLSum",
    "PinnedPrefetcher",
    "allow_float64",
    "available",
    "blockwise",
    "check_float64",
    "compat_version",
    "compiler",
    "compute_together",
    "computed_blocks",
    "convert",
    "cuda_graph_step",
    "dask_scheduler",
    "default_device",
    "device",
    "device_name",
    "devices",
    "dtype_name",
    "erf",
    "erf_generic",
    "erfc",
    "erfc_generic",
    "flat_views",
    "fused",
    "gather_rows",
    "gather_threads",
    "get",
    "host_rng",
    "host_uniform",
    "inplace_updates",
    "is_floating",
    "is_integral",
    "lazy_rows",
    "library_name",
    "library_version",
    "memory_bytes",
    "namespace",
    "nccl_unique_id",
    "nccl_usable",
    "on_host",
    "onnx_graph",
    "onnx_op",
    "out_of_memory",
    "placement",
    "prefetcher",
    "quiet_float_errors",
    "rank_device",
    "report",
    "resolve_device",
    "resolve_dtype",
    "set_tf32",
    "symbolic_input",
    "synchronize",
    "to_numpy",
    "use_fused",
]
