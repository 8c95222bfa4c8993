#!/usr/bin/env bash
# Sharded analyze / kv / ablate on a GPU: the NCCL path of `geomlens.runner.distributed`.
#
#   bash benchmarks/gpu_sharding.sh OUT_DIR [NPROC]     # default NPROC: the visible GPUs
#
# Trains a tiny run (the test suite's `train_tiny_run`, on the CPU), then runs each command once
# in one process on cuda:0 and once under `torchrun --nproc_per_node=NPROC` (NCCL, one GPU per
# rank), and compares the two run directories with benchmarks/compare_runs.py: summary.json
# equal up to the clocks, and the tables byte for byte. NCCL needs NPROC >= 2 GPUs: torchrun with
# one rank starts no process group (`init_distributed`), so on one GPU the check covers the
# commands on CUDA and the torchrun launch, not the NCCL gathers.
# Needs the SmolLM2 tokenizer in $GEOMLENS_CACHE (scripts/gpu_pack.sh packs it).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
PY=${PY:-python3}
nproc=${2:-$("$PY" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
device=${GEOMLENS_SHARD_DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
"$PY" - "$out/model" <<'PY' || exit 1
import sys
sys.path.insert(0, "tests")
from helpers import train_tiny_run
train_tiny_run(sys.argv[1], vocab_size=64, steps=2)
PY
common=(--domains news,technical --n-segments 3 --max-tokens 24 --batch-size 2 --device "$device"
        --model "$out/model")
declare -A args=(
  [analyze]="analyze --n-bootstrap 50 --n-permutations 15 --control-positions 40 --spearman-positions 30 --layer-lens-positions 40 --trajectory-segments 3 --calibration-positions 20 --position-chunk 7"
  [kv]="kv --n-bootstrap 50 --sweep"
  [ablate]="ablate --method resample --sweep")
rc=0
for name in analyze kv ablate; do
  # shellcheck disable=SC2086
  "$PY" -m geomlens ${args[$name]} "${common[@]}" --out "$out/$name-one" > "$out/$name-one.log" 2>&1 \
    || { echo "$name: one process failed"; rc=1; }
  # shellcheck disable=SC2086
  "$PY" -m torch.distributed.run --nproc_per_node="$nproc" --rdzv-backend=c10d \
    --rdzv-endpoint=localhost:0 -m geomlens ${args[$name]} "${common[@]}" --out "$out/$name-torchrun$nproc" \
    > "$out/$name-torchrun$nproc.log" 2>&1 || { echo "$name: torchrun failed"; rc=1; }
  "$PY" benchmarks/compare_runs.py "$out/$name-one" "$out/$name-torchrun$nproc" | tee -a "$out/compare.txt" \
    || rc=1
done
# the same analysis on the CPU: how far the accelerator moves the numbers (reported, not asserted)
"$PY" -m geomlens ${args[analyze]} "${common[@]/$device/cpu}" --out "$out/analyze-cpu" \
  > "$out/analyze-cpu.log" 2>&1 && "$PY" benchmarks/compare_runs.py --largest "$out/analyze-cpu" \
  "$out/analyze-one" | tee -a "$out/compare.txt"
exit $rc
