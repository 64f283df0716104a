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
    "array-api-compat==1.16.0" "array-api-strict==2.6.1" tqdm hypothesis attrs sortedcontainers
ls -1 .whl
du -sh .whl
