"""`TrainConfig`: everything that defines a training run (stored as the run dir's config.json and
inside every checkpoint). Built from CLI flags by `geomlens train` and from YAML by `geomlens run`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from geomlens.config.base import Config, choices
from geomlens.errors import InputError

logger = logging.getLogger(__name__)

SIGMA_INITS = ("uniform", "frequency")
SPLITS = ("train_cpu", "train_gpu")


@dataclass(kw_only=True)
class TrainConfig(Config):
    model: str = "micro-1m"
    """micro-LLaMA size name (`geomlens.models.micro.MICRO_SIZES`)."""
    head: str = field(default="linear", metadata=choices("geomlens.heads.registry:HEADS"))
    """LM head (`geomlens.heads.HEADS`)."""
    vocab_size: int | None = None
    """Keep only the ``vocab_size − 1`` most frequent training tokens and map every other token
    to one shared out-of-vocabulary id (the last); None = the tokenizer's full vocabulary
    (49152). A CPU-scale shortcut: the LM head over 49152 tokens dominates a micro-1m step."""
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the head (e.g. ``{"hidden": 32}`` for context_mlp)."""
    tokens: int | None = None
    """Training budget in tokens (rounded up to whole steps). Exactly one of tokens/steps."""
    steps: int | None = None
    """Training budget in optimizer steps. Exactly one of tokens/steps."""
    batch_size: int = 16
    """Sequences per optimizer step (per process under DDP)."""
    seq_len: int = 128
    """Tokens per training sequence (≤ the model's n_ctx)."""
    lr: float = 3e-3
    """Peak learning rate of the transformer (and of the linear head's W_U, b_U)."""
    kernel_lr: float | None = None
    """Peak learning rate of the head's kernel parameters (σ_v, f, context MLP, b_v); None = lr."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr · min_lr_ratio."""
    weight_decay: float = 0.1
    """AdamW weight decay of ≥2-D transformer weights (vectors and norms get none)."""
    kernel_weight_decay: float = 0.0
    """AdamW weight decay of the kernel parameters."""
    warmup: int = 50
    """Linear warm-up steps before the cosine decay."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this; None = no clipping."""
    eval_every: int = 50
    """Evaluate on held-out tokens every this many steps (and at the end)."""
    eval_tokens: int = 32768
    """Held-out tokens per evaluation (fixed windows, the same at every evaluation)."""
    val_fraction: float = 0.02
    """Fraction of the token stream (its end) held out for validation."""
    sigma_init: str = field(default="uniform", metadata=choices(SIGMA_INITS))
    """σ_v initialisation for heads with per-token scales: "uniform" (the head's default
    constant) or "frequency" (from training-token counts; see `Head.set_token_prior`)."""
    split: str = field(default="train_cpu", metadata=choices(SPLITS))
    """Bundled training text (`geomlens.data.load_corpus` split)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1"...; None = cuda if available."""
    seed: int = 0
    """Seeds the model init, the data order and every RNG."""
    kv_layers: str | None = None
    """First-layer K/V (thesis §5.2, Table 6.3): a `geomlens.kv.LayerMap` spec of the layers
    that attend to another layer's keys/values ("all" = every layer ≥ 1 uses layer 0's);
    gradients flow into the source layer, and the consumers' W_K/W_V are frozen and unused.
    None = a standard model."""
    checkpoint_every: int | None = None
    """Save a checkpoint every this many steps (and always at the end); None = only at the end."""
    log_every: int = 10
    """Log training loss and tokens/s every this many steps."""

    def validate(self) -> None:
        if (self.tokens is None) == (self.steps is None):
            raise InputError("give exactly one of --tokens or --steps (e.g. --steps 300)")
        for name in ("batch_size", "seq_len", "eval_every", "eval_tokens", "log_every"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise InputError(f"vocab_size must be >= 2 (or unset), got {self.vocab_size}.")
        for name in ("tokens", "steps", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise InputError(f"{name} must be positive (or unset), got {v}.")
        if self.warmup < 0:
            raise InputError(f"warmup must be >= 0, got {self.warmup}.")
        if self.lr <= 0 or (self.kernel_lr is not None and self.kernel_lr <= 0):
            raise InputError("Learning rates must be positive.")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        if self.kv_layers is not None:
            from geomlens.kv.layer_map import check_spec

            check_spec(self.kv_layers)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def total_steps(self, world_size: int = 1) -> int:
        """Optimizer steps of the run (``tokens`` counts all processes together)."""
        if self.steps is not None:
            return self.steps
        per_step = self.tokens_per_step * world_size
        return -(-int(self.tokens) // per_step)
