#!/usr/bin/env bash
# Regenerate the committed notebooks: execute each in place, so that outputs and figures are
# stored (a reader on a code host sees them). Holds the shared heavy-work lock while it runs.
#   scripts/notebooks.sh                 # every notebook in notebooks/
#   scripts/notebooks.sh notebooks/02_*.ipynb
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=module://matplotlib_inline.backend_inline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_DATASETS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset GEOMLENS_NOTEBOOK_SMALL  # full settings for the committed outputs
[ "$#" -gt 0 ] || set -- notebooks/*.ipynb
for nb in "$@"; do
  echo "executing $nb"
  flock /tmp/geomlens-heavy.lock jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=1800 "$nb"
done
