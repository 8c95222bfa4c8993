#!/usr/bin/env bash
# Main job: the distance-vs-probability analysis (thesis Table 6.1 layout) of smollm2-135m on
# the bundled corpus. Sets up ./.venv first. Extra arguments go to `geomlens analyze`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec geomlens analyze --model smollm2-135m --n-segments 4 --max-tokens 64 --n-permutations 10 --trajectory-segments 2 --out runs/main-smollm2 "$@"
