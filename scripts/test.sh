#!/usr/bin/env bash
# Test suite: unit tests (tiny random models), integration tests (real offline models, converted
# once and cached), and the notebooks (nbmake), under TransformerLens 3 in ./.venv; then the
# backend and parity tests (pytest -m tl4) under TransformerLens 4 in ./.venv-tl4
# (GEOMLENS_SKIP_TL4=1 skips that second environment). Extra args go to the first pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MPLBACKEND=Agg GEOMLENS_NOTEBOOK_SMALL=1
export GEOMLENS_PARITY_DIR="${GEOMLENS_PARITY_DIR:-$ROOT/.parity}"
(
  source "$ROOT/scripts/setup_env.sh"
  python -m pytest tests notebooks --nbmake -p no:cacheprovider -q "$@"
)
if [ "${GEOMLENS_SKIP_TL4:-0}" != 1 ]; then
  (
    source "$ROOT/scripts/setup_env_tl4.sh"
    # only the modules that import under TransformerLens 4 (the rest import HookedTransformer):
    # the bridge unit tests (tiny models) and the parity tests, which compare with the figures
    # the first stage left in $GEOMLENS_PARITY_DIR
    python -m pytest tests/unit/backend/test_tl4.py tests/unit/backend/test_version.py \
      tests/unit/kv/test_kv_patch_bridge.py tests/unit/projection/test_projection_bridge.py \
      tests/unit/explorer/test_explorer_bridge.py tests/unit/analysis/test_analysis_bridge.py \
      tests/integration/test_backend_parity.py tests/integration/test_backend_cli.py \
      -m tl4 -p no:cacheprovider -q
  )
fi
