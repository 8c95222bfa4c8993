"""`geomlens train`: train a micro-LLaMA with a chosen LM head (thesis Table 6.2). Flags: `TrainConfig`.

    geomlens train --model micro-1m --head hybrid --steps 300 --seed 0 --out runs/hybrid-s0
    geomlens train ... --out runs/hybrid-s0 --resume        # continue from the latest checkpoint
    torchrun --nproc_per_node=4 -m geomlens train --model micro-70m --split train_gpu ...
"""

from __future__ import annotations

import json
from pathlib import Path

KIND = "train"


def headline(summary: dict, run_dir: Path) -> str:
    keys = ("val_loss", "val_perplexity", "val_accuracy", "head_params", "tokens_per_s")
    return json.dumps({k: summary[k] for k in keys if k in summary}, indent=2)
