"""Checkpoints that make a resumed run reproduce the uninterrupted one exactly (on CPU).

A checkpoint (``checkpoints/step-XXXXXX.pt``, plus ``latest.pt`` pointing at the newest) holds
    config            the TrainConfig as a dict (nanoGPT keeps its model args the same way)
    model_config      the HookedTransformerConfig as a dict
    model, optimizer  state dicts
    scheduler         {"step": ...}: `get_lr` is a pure function of the step
    step              completed optimizer steps = the data position of the next batch
    rng               torch (CPU and CUDA), python ``random`` and numpy global states
    data_generator    the state of the batch-sampling generator
    metrics           the metrics rows written so far (metrics.csv is rewritten from them)
    loss_window       training losses since the last metrics row
    tokens_seen       tokens trained on so far
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``step-XXXXXX.pt`` and ``latest.pt`` (both atomically)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{state['step']:06d}.pt"
    for target in (path, ckpt_dir / LATEST):
        tmp = target.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(target)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoints/latest.pt`` of a run dir, or None."""
    path = Path(run_dir) / CHECKPOINT_DIR / LATEST
    return path if path.exists() else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only=False: the file holds RNG states (numpy arrays, tuples) written by this code.
    return torch.load(path, map_location=map_location, weights_only=False)
