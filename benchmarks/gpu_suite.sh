#!/usr/bin/env bash
# The GPU suite in one call (<= 10 min on one H100/H200; see benchmarks/gpu_suite.py).
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR] [gpu_suite.py flags]    # default OUT_DIR: $OUT, else
#                                                                 # benchmarks/results/gpu_suite
#   bash benchmarks/gpu_suite.sh /tmp/x --dry-run                  # CPU, tiny shapes, seconds
#
# On a bare, offline GPU machine run scripts/gpu_pack.sh first where pip works, so that .gpu/
# travels with the tree: the carried wheels are installed when transformer_lens is missing.
# Writes OUT_DIR/env.txt (nvidia-smi, versions), OUT_DIR/gpu_suite.json (rewritten after every
# section) and OUT_DIR/gpu_suite.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results/gpu_suite}}
shift || true
mkdir -p "$out"
PY=${PY:-python3}
if ! "$PY" -c "import transformer_lens, jaxtyping" 2>/dev/null && [ -d .gpu/whl ]; then
  echo "installing the carried wheels (.gpu/whl)"
  source scripts/gpu_env.sh || echo "wheel install failed"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
{
  date -u; nproc; uptime
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|transformer|numpy|pandas|scipy|jaxtyping|triton) " || true
} > "$out/env.txt" 2>&1
cat "$out/env.txt"
"$PY" benchmarks/gpu_suite.py --out "$out" "$@" 2>&1 | tee "$out/gpu_suite.log"
