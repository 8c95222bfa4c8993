#!/usr/bin/env bash
# Test suite: unit tests (tiny random models), integration tests (real offline models, converted
# once and cached), and the notebooks (nbmake). Sets up ./.venv first. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export MPLBACKEND=Agg GEOMLENS_NOTEBOOK_SMALL=1
python -m pytest tests notebooks --nbmake -p no:cacheprovider -q "$@"
