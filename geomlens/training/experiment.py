"""The ``train`` experiment kind: ``run_training(cfg, run_dir) -> summary``.

Used by both `geomlens train` and `geomlens run CONFIG` (``experiment: train``). If ``run_dir``
already holds a checkpoint, training resumes from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geomlens.experiments.registry import register_experiment
from geomlens.training.config import TrainConfig


def run_training(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one model into ``run_dir``; returns the summary (final val loss,
    perplexity, accuracy, head/total params, tokens/s, device)."""
    from geomlens.training import distributed as ddp
    from geomlens.training.loop import Trainer

    trainer = Trainer(cfg, run_dir)
    try:
        return trainer.train()
    finally:
        ddp.shutdown(trainer.dist)


register_experiment("train", TrainConfig, run_training, resumable=True)
