"""Training micro-LLaMAs with any LM head: config, schedule, data, checkpoints, loop, DDP.

    from geomlens.training import TrainConfig, Trainer
    trainer = Trainer(TrainConfig(head="hybrid", steps=300), "runs/x")
    summary = trainer.train()
    result = trainer.result()        # TrainingResult: HTML headline, .metrics, .plot(), .save()
"""

from geomlens.training.config import TrainConfig
from geomlens.training.loop import Trainer
from geomlens.training.result import TrainingResult
from geomlens.training.schedule import get_lr

__all__ = ["TrainConfig", "Trainer", "TrainingResult", "get_lr"]
