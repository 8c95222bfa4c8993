"""The ``train`` experiment kind: ``run_training(cfg, run_dir) -> summary``.

Used by both `geomlens train` and `geomlens run CONFIG` (``experiment: train``). If ``run_dir``
already holds a checkpoint, training resumes from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from geomlens.backend import require_tl3
from geomlens.errors import InputError
from geomlens.heads.registry import check_head_kwargs
from geomlens.models.inputs import check_memory
from geomlens.models.micro import MICRO_SIZES, SMOLLM2_VOCAB
from geomlens.registry import closest
from geomlens.runner import distributed as ddp
from geomlens.runner.command import Command, Tool
from geomlens.training.config import TrainConfig
from geomlens.training.convert_run import convert_run
from geomlens.training.loop import Trainer


def run_training(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one model into ``run_dir``; returns the summary (final val loss,
    perplexity, accuracy, head/total params, tokens/s, device; with per-token scales the
    Spearman ρ of σ_v vs training count) after the main process wrote the figures through
    `geomlens.training.result.TrainingResult.save` (the code a notebook's ``save`` runs)."""
    trainer = Trainer(cfg, run_dir)
    try:
        summary = trainer.train()
        return trainer.result().save(run_dir) if trainer.dist.is_main else summary
    finally:
        ddp.shutdown(trainer.dist)


def validate_training(cfg: TrainConfig) -> None:
    """Micro size, head name, sizes against the model, the tokenizer and the memory, checked
    before a run directory exists. Training builds TransformerLens 3 ``HookedTransformerConfig``
    models: under TransformerLens 4 this is a one-line error naming the pip command."""
    require_tl3("geomlens train")
    check_head_kwargs(cfg.head, cfg.head_kwargs)
    if cfg.model not in MICRO_SIZES:
        raise InputError(f"unknown micro size {cfg.model!r}.{closest(cfg.model, tuple(MICRO_SIZES))} "
                         f"Available: {', '.join(MICRO_SIZES)}")
    size = MICRO_SIZES[cfg.model]
    if cfg.seq_len > size.n_ctx:
        longest = max(MICRO_SIZES, key=lambda name: MICRO_SIZES[name].n_ctx)
        raise InputError(f"--seq-len {cfg.seq_len} exceeds {cfg.model}'s context of {size.n_ctx} "
                         f"tokens; use --seq-len <= {size.n_ctx} ({longest} takes "
                         f"{MICRO_SIZES[longest].n_ctx})")
    if cfg.vocab_size is not None and cfg.vocab_size > SMOLLM2_VOCAB:
        raise InputError(f"--vocab-size {cfg.vocab_size} exceeds the tokenizer's {SMOLLM2_VOCAB} "
                         f"tokens; give at most {SMOLLM2_VOCAB} (or leave it unset for all)")
    check_memory(step_bytes(cfg), "one training step", "lower --batch-size or --seq-len")


def step_bytes(cfg: TrainConfig) -> int:
    """A lower bound on the float32 memory one training step keeps for its backward pass:
    per layer the attention scores and pattern (2 x batch x heads x pos^2) and ~8 residual-wide
    activations, plus the logits, their softmax and gradient (3 x batch x pos x d_vocab)."""
    size = MICRO_SIZES[cfg.model]
    b, t = cfg.batch_size, cfg.seq_len
    per_layer = 2 * b * size.n_heads * t * t + 8 * b * t * max(size.d_model, size.d_mlp)
    vocab = cfg.vocab_size or SMOLLM2_VOCAB
    return 4 * (size.n_layers * per_layer + 3 * b * t * vocab)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run directory (holds checkpoints/latest.pt)")
    parser.add_argument("--trust-pickle", action="store_true", help=(
        "unpickle files that hold more than tensors and plain values: this runs any code in "
        "them; only for files from someone you trust"))


def run_convert(args: argparse.Namespace) -> int:
    """`geomlens convert-run` (`geomlens.training.convert_run`)."""
    path = convert_run(args.run_dir, trust_pickle=args.trust_pickle)
    sys.stdout.write(f"Converted {args.run_dir}: {path.name} + model.json written; its "
                     "checkpoints load with torch.load(weights_only=True).\n")
    return 0


def headline(summary: dict, run_dir: Path) -> str:
    keys = ("val_loss", "val_perplexity", "val_accuracy", "head_params", "tokens_per_s",
            "sigma_count_spearman")
    return json.dumps({k: summary[k] for k in keys if k in summary}, indent=2)


COMMANDS = (Command(
    "train", TrainConfig, run_training, validate=validate_training, resumable=True,
    headline=headline, help="train a micro-LLaMA with a KNN / kernel / linear LM head (resumable)"),
    Tool("convert-run", add_convert_arguments, run_convert, help=(
        "convert a run directory of an earlier geomlens (pickled checkpoints) to safetensors + "
        "JSON, in place")),
)
