#!/usr/bin/env bash
# Main job: the distance-vs-probability analysis (thesis Table 6.1 layout) of smollm2-135m on
# the bundled corpus. Sets up ./.venv first. Extra arguments go to `geomlens analyze`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# Small settings (20 segments x 64 tokens, per-layer trajectories on 1 of them, the layer lens on
# 64 positions) so that it runs in about a minute on 2 CPU cores; otherwise the defaults (1023
# permutations, Spearman on up to 512 positions, controls on 512, calibrated JSD). Prints the
# headline table; the full table is in the run dir.
exec geomlens analyze --model smollm2-135m --n-segments 4 --max-tokens 64 --trajectory-segments 1 \
    --layer-lens-positions 64 --out runs/main-smollm2 "$@"
