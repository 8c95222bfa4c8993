"""Checkpoints that make a resumed run reproduce the uninterrupted one exactly (on CPU).

A checkpoint (``checkpoints/step-XXXXXX.pt``, plus ``latest.pt`` = the newest) holds only
tensors and plain values (dict, list, tuple, str, int, float, bool, None), so it is read with
``torch.load(weights_only=True)``, which runs no code from the file:
    format            CHECKPOINT_FORMAT
    config            the TrainConfig as a dict (nanoGPT keeps its model args the same way)
    model_config      the HookedTransformerConfig as JSON values (`geomlens.models.cache`)
    model, optimizer  state dicts
    scheduler         {"step": ...}: `get_lr` is a pure function of the step
    step              completed optimizer steps = the data position of the next batch
    rng               `rng_state`: torch (CPU and CUDA) as tensors, python ``random`` as its
                      tuple of ints, numpy's MT19937 state as a tensor of its 624 keys + ints
    data_generators   the state (a tensor) of each rank's batch-sampling generator
    metrics           the metrics rows written so far (metrics.csv is rewritten from them)
    loss_window       training losses since the last metrics row
    tokens_seen       tokens trained on so far

The trained model itself is also written, as data, next to the checkpoints
(`geomlens.models.trained`: model.safetensors + model.json); that is what others load.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomlens.errors import UnsafeFileError
from geomlens.models.trained import CONVERT_COMMAND

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
#: 2 = weights_only-safe (numpy state as tensors); checkpoints without the key are the old format
CHECKPOINT_FORMAT = 2


def rng_state() -> dict[str, Any]:
    """Every global random state, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``step-XXXXXX.pt`` and ``latest.pt`` (both atomically)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{state['step']:06d}.pt"
    state = {"format": CHECKPOINT_FORMAT, **state}
    for target in (path, ckpt_dir / LATEST):
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        tmp.replace(target)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoints/latest.pt`` of a run dir, or None."""
    path = Path(run_dir) / CHECKPOINT_DIR / LATEST
    return path if path.exists() else None


def unsafe_reason(exc: BaseException) -> str:
    """One line on why torch's restricted unpickler refused a file (the global it met)."""
    found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL (\S+)", str(exc))
    if found:
        return f"it asks for {found.group(1)}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint read with ``torch.load(weights_only=True)`` (no code in it runs).

    Raises `UnsafeFileError` (one line) for a file that holds anything but tensors and plain
    values (a pickle payload, or a checkpoint of an earlier geomlens, which names the command
    that converts it) or that is corrupt."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
        raise UnsafeFileError(
            f"{path} cannot be read as tensors and plain values ({unsafe_reason(exc)}); nothing "
            f"in it was run. A run of an earlier geomlens is converted with: {CONVERT_COMMAND} "
            f"{run_dir}; any other such file should not be trusted.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UnsafeFileError(f"{path} is not a geomlens checkpoint of format {CHECKPOINT_FORMAT}"
                              f" (convert an older run with: {CONVERT_COMMAND} {path.parent.parent}).")
    return state
