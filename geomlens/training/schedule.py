"""nanoGPT's learning-rate schedule: linear warm-up, then cosine decay to ``min_lr``."""

from __future__ import annotations

import math


def get_lr(it: int, *, lr: float, warmup: int, total: int, min_lr: float) -> float:
    """Learning rate at step ``it`` (0-based).

    ``it < warmup``: lr · (it + 1) / warmup. Then cosine from ``lr`` (at ``warmup``) to
    ``min_lr`` (at ``total``); constant ``min_lr`` after ``total``.
    """
    if it < warmup:
        return lr * (it + 1) / warmup
    if it >= total:
        return min_lr
    decay_ratio = (it - warmup) / max(1, total - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)
