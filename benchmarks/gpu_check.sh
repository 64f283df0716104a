#!/usr/bin/env bash
# Every CUDA check of xpnet in one device run, ending with one table: each stage has a time
# limit, 995 s in all at worst, about seven minutes when all goes well (device run: timeout_s
# 540 or what the session has left; each stage's log comes back as it ends).
#
# Here first:   bash benchmarks/gpu_wheels.sh     (fills the git-ignored .whl/)
# On the device (the device tool's run, carry: [".whl"], timeout_s 590):
#               bash benchmarks/gpu_check.sh
# Each stage's whole log is kept in $LOGS; they come back joined as one file, $OUT/gpu-check.log
# (the device tool returns at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/xpnet-gpu-check}
LOGS=/tmp/xpnet-gpu-logs
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "no wheels: run benchmarks/gpu_wheels.sh here"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
if ls .whl/mpi/*.whl > /dev/null 2>&1 &&
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --prefix /tmp/mpi .whl/mpi/*.whl; then  # MPICH's libraries need a prefix, not --target
    mpi_site=$(dirname "$(dirname "$(find /tmp/mpi -path '*/mpi4py/__init__.py' | head -n 1)")")
    mpi_lib=$(dirname "$(find /tmp/mpi -name 'libmpi.so.12' | head -n 1)")
    export PYTHONPATH=$PYTHONPATH:$mpi_site PATH=/tmp/mpi/bin:$PATH
    export LD_LIBRARY_PATH=$mpi_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
[ -d .whl/cache ] && export XDG_CACHE_HOME=$PWD/.whl/cache  # MNIST-1D, made by gpu_wheels.sh
declare -A STATUS

stage() {  # stage NAME SECONDS COMMAND...: run, log to $LOGS/NAME.log and $OUT/gpu-check.log, record pass/fail and time
    local name=$1 limit=$2; shift 2
    if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then
        return 0  # GPU_CHECK_ONLY="bench-gpu gpu-train": a rerun of some stages
    fi
    local start=$SECONDS
    echo "== $name"
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    if [ "$rc" -eq 0 ]; then tail -n 12 "$LOGS/$name.log"; else tail -n 40 "$LOGS/$name.log"; fi
    { echo "==== $name (rc=$rc)"; cat "$LOGS/$name.log"; } >> "$OUT/gpu-check.log"
    STATUS[$name]="rc=$rc, $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/card.txt"
STAGES="info pytest-cupy gpu-train gpu-train-float64 bench-gpu graph-profile kernel-profile parity-float64 parity-float32 train-cupy evaluate-numpy nosync nccl prefetch"
stage info 20 python3 -m xpnet info
# the data-parallel test needs MPI: its own stage, so that a machine without it fails alone
# in 8 processes sharing the GPU (pytest-xdist travels in .whl): one process took over 180 s
stage pytest-cupy 240 python3 -m pytest --backend=cupy -n 8 -v --tb=short -p no:cacheprovider \
    -p no:benchmark -rfE \
    --ignore=tests/test_nccl.py
# whole training runs against NumPy on this machine; the step timings, float32 and TF32
stage gpu-train 120 python3 benchmarks/gpu_train.py
stage gpu-train-float64 120 python3 benchmarks/gpu_train.py --dtype float64
stage bench-gpu 330 python3 -m xpnet bench --gpu --tf32 --seconds 0.5
stage graph-profile 40 python3 benchmarks/gpu_graph_profile.py
stage kernel-profile 60 python3 benchmarks/gpu_kernel_profile.py
stage parity-float64 30 python3 -m xpnet parity --backends numpy,cupy --dtype float64
stage parity-float32 30 python3 -m xpnet parity --backends numpy,cupy --dtype float32
stage train-cupy 45 python3 -m xpnet train --backend cupy --out /tmp/xpnet-run --quiet --json
stage evaluate-numpy 20 python3 -m xpnet evaluate /tmp/xpnet-run/model.safetensors --backend numpy --json
stage nosync 30 python3 benchmarks/gpu_nosync.py
stage nccl 40 python3 benchmarks/gpu_nccl.py
stage prefetch 60 python3 benchmarks/gpu_prefetch.py

echo
echo "== summary ($(head -n 1 "$LOGS/card.txt"))"
for name in $STAGES; do
    printf '%-16s %s\n' "$name" "${STATUS[$name]:-not run}"
done
python3 - "$LOGS" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    trained = json.loads((out / "train-cupy.log").read_text().splitlines()[-1])
    evaluated = json.loads((out / "evaluate-numpy.log").read_text().splitlines()[-1])
    same = trained["test_accuracy"] == evaluated["accuracy"]
    print(f"accuracy: trained on cupy {trained['test_accuracy']:.4f}, evaluated on numpy "
          f"{evaluated['accuracy']:.4f} ({'same' if same else 'DIFFERENT'})")
except Exception as err:  # a stage failed: its log says why
    print(f"accuracy: not available ({err})")
PY
