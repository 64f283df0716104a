#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels that the GPU machine's image may lack,
# for its Python 3.12: the device reaches no package registry, so they travel with the tree
# (`carry: [".whl"]`) and benchmarks/gpu_check.sh installs them with --target.
#
#   bash benchmarks/gpu_wheels.sh        # here, before asking for the device
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --abi none --platform any -d .whl \
    "array-api-compat==1.16.0" "array-api-strict==2.6.1" tqdm hypothesis attrs sortedcontainers \
    pytest-xdist execnet
# mpi4py and MPICH for the data-parallel check through NCCL (binary wheels, about 15 MB;
# gpu_check.sh installs them with --prefix, as MPICH's libraries live outside the package)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux1_x86_64 -d .whl/mpi "mpi4py==4.1.2" "mpich==5.0.2"
# scikit-learn (the estimators' backend="cupy" tests) and safetensors (the checkpoint
# cross-check): binary wheels, installed with --target like the pure-Python ones
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "scikit-learn==1.9.1" joblib threadpoolctl "safetensors==$(python3 -c 'import safetensors; print(safetensors.__version__)' 2>/dev/null || echo 0.7.0)"
# MNIST-1D for benchmarks/gpu_train.py, generated here (the device lacks the mnist1d package)
# into the cache that xpnet reads (XDG_CACHE_HOME=.whl/cache on the device)
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
XDG_CACHE_HOME=$PWD/.whl/cache "$python" -c "from xpnet.data import load_mnist1d; load_mnist1d()" ||
    echo "no MNIST-1D (pip install 'xpnet[datasets]' here): gpu_train.py will skip it"
ls -1 .whl .whl/mpi
du -sh .whl
