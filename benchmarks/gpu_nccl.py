"""On a CUDA machine: whether CuPy's NCCL loads here, then the one-process data-parallel
tests on CuPy (``tests/test_nccl.py``: sums and a training run through NCCL, or through
the host when NCCL is missing), which need mpi4py.

    python benchmarks/gpu_nccl.py
"""

import sys

import pytest

from xpnet import backend

if __name__ == "__main__":
    import cupy

    print("nccl usable:", backend.nccl_usable(cupy.zeros(1)))
    args = ["--backend=cupy", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_nccl.py"]
    sys.exit(pytest.main(args))
