"""Training micro-LLaMAs with any LM head: config, schedule, data, checkpoints, loop, DDP.

    from geomlens.training import TrainConfig, Trainer
    summary = Trainer(TrainConfig(head="hybrid", steps=300), "runs/x").train()
"""

from geomlens.training.config import TrainConfig
from geomlens.training.loop import Trainer
from geomlens.training.schedule import get_lr

__all__ = ["TrainConfig", "Trainer", "get_lr"]
