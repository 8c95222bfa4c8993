"""The ``train`` experiment kind: ``run_training(cfg, run_dir) -> summary``.

Used by both `geomlens train` and `geomlens run CONFIG` (``experiment: train``). If ``run_dir``
already holds a checkpoint, training resumes from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geomlens.errors import InputError
from geomlens.heads.registry import check_head_kwargs
from geomlens.models.micro import MICRO_SIZES
from geomlens.registry import closest
from geomlens.runner.command import Command
from geomlens.training import distributed as ddp
from geomlens.training.config import TrainConfig
from geomlens.training.loop import Trainer


def run_training(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one model into ``run_dir``; returns the summary (final val loss,
    perplexity, accuracy, head/total params, tokens/s, device)."""
    trainer = Trainer(cfg, run_dir)
    try:
        return trainer.train()
    finally:
        ddp.shutdown(trainer.dist)


def validate_training(cfg: TrainConfig) -> None:
    """Micro size and head name, checked before a run directory exists."""
    check_head_kwargs(cfg.head, cfg.head_kwargs)
    if cfg.model not in MICRO_SIZES:
        raise InputError(f"unknown micro size {cfg.model!r}.{closest(cfg.model, tuple(MICRO_SIZES))} "
                         f"Available: {', '.join(MICRO_SIZES)}")




def headline(summary: dict, run_dir: Path) -> str:
    keys = ("val_loss", "val_perplexity", "val_accuracy", "head_params", "tokens_per_s")
    return json.dumps({k: summary[k] for k in keys if k in summary}, indent=2)


COMMANDS = (Command(
    "train", TrainConfig, run_training, validate=validate_training, resumable=True,
    headline=headline, help="train a micro-LLaMA with a KNN / kernel / linear LM head (resumable)"),)
