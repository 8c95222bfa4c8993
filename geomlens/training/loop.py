"""The training loop, nanoGPT-style: `Trainer(cfg, run_dir).train()`.

One step: set the lr from `get_lr`, draw a batch of random contiguous windows, forward (bf16
autocast on CUDA only), cross-entropy in float32, backward, clip the global gradient norm, AdamW.
Three parameter groups: ≥2-D transformer weights (``weight_decay``), vectors and norms (no decay),
and the head's kernel parameters (σ_v, f, context MLP, b_v) with ``kernel_lr`` and
``kernel_weight_decay``.

Outputs in ``run_dir``: ``metrics.csv`` (one row per ``log_every`` steps and per evaluation),
``checkpoints/`` (resume state, see `geomlens.training.checkpoint`), the trained model as data
(``model.safetensors`` + ``model.json``, `geomlens.models.trained`, rewritten with every
checkpoint; each ``checkpoints/step-XXXXXX.pt`` gets its model as ``step-XXXXXX.safetensors``), and for heads with per-token scales ``kernel.pt`` (σ_v and the training-token
counts, tensors only). A Trainer built on a run dir that holds a
checkpoint resumes from it, and on CPU the continued run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from geomlens.backend import require_tl3
from geomlens.device import resolve_device
from geomlens.errors import InputError
from geomlens.heads import install_head
from geomlens.models.cache import config_to_json
from geomlens.models.tokens import load_token_stream
from geomlens.models.trained import save_trained, save_weights
from geomlens.runner import distributed as ddp
from geomlens.training import checkpoint as ckpt
from geomlens.training.config import TrainConfig
from geomlens.training.data import TokenData, eval_windows, get_batch
from geomlens.training.result import KERNEL_FILE, TrainingResult
from geomlens.training.schedule import get_lr

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer, HookedTransformerConfig

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "val_accuracy", "lr", "tokens_per_s")


def model_config_for(cfg: TrainConfig, device: torch.device) -> HookedTransformerConfig:
    """The micro-LLaMA config of ``cfg.model`` (n_ctx raised to seq_len if needed)."""
    from geomlens.models.micro import MICRO_SIZES, micro_config

    n_ctx = MICRO_SIZES[cfg.model].n_ctx if cfg.model in MICRO_SIZES else None
    n_ctx = max(n_ctx, cfg.seq_len) if n_ctx is not None else None
    kw = {"d_vocab": cfg.vocab_size} if cfg.vocab_size is not None else {}
    return micro_config(cfg.model, n_ctx=n_ctx, seed=cfg.seed, device=str(device), **kw)


def build_model(
    cfg: TrainConfig, model_cfg: HookedTransformerConfig, data: TokenData
) -> HookedTransformer:
    """A freshly initialised model (seeded by ``model_cfg.seed``) with head ``cfg.head``."""
    model = require_tl3("Training").HookedTransformer(model_cfg)
    head = install_head(model, cfg.head, **cfg.head_kwargs)
    if cfg.kv_layers is not None:
        from geomlens.kv.training import share_kv

        shared = share_kv(model, cfg.kv_layers)
        logger.info("kv_layers %s: layer_types %s, %d K/V parameters frozen", cfg.kv_layers,
                    shared["layer_map"].layer_types, shared["unused_params"])
    if cfg.sigma_init == "frequency":
        if head.set_token_prior(data.unigram_log_prior(model_cfg.d_vocab).to(head.W_E.device)):
            logger.info("σ_v initialised from training-token frequencies")
        else:
            logger.info("head %r has no per-token scales; sigma_init=frequency ignored", cfg.head)
    model.train()
    return model


def param_groups(model: HookedTransformer, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: decay (≥2-D), no_decay (<2-D), kernel (the head's kernel parameters)."""
    kernel = model.unembed.kernel_parameters()
    kernel_ids = {id(p) for p in kernel}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in kernel_ids]
    groups = [
        {"name": "decay", "params": [p for p in rest if p.dim() >= 2],
         "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
        {"name": "no_decay", "params": [p for p in rest if p.dim() < 2],
         "weight_decay": 0.0, "peak_lr": cfg.lr},
        {"name": "kernel", "params": kernel, "weight_decay": cfg.kernel_weight_decay,
         "peak_lr": cfg.kernel_lr if cfg.kernel_lr is not None else cfg.lr},
    ]
    return [g for g in groups if g["params"]]


class Trainer:
    """Train one model with one head; resumes from ``run_dir/checkpoints/latest.pt`` if present.

    Args:
        cfg: the run's config.
        run_dir: where metrics, checkpoints and kernel.pt go.
        model_cfg: override the micro-LLaMA config (unit tests use a tiny one).
        stream: override the token stream (unit tests use random tokens).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        model_cfg: HookedTransformerConfig | None = None,
        stream: Int[Tensor, "n_tokens"] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist, self.device = ddp.init_distributed(resolve_device(cfg.device))
        if stream is None:
            stream = load_token_stream(cfg.split)
        self.data = TokenData.from_stream(stream, val_fraction=cfg.val_fraction)
        if cfg.vocab_size is not None:
            self.data = self.data.reduce_vocab(cfg.vocab_size)
        if model_cfg is None:
            model_cfg = model_config_for(cfg, self.device)
        top = int(max(self.data.train.max(), self.data.val.max()))
        if top >= model_cfg.d_vocab:
            raise InputError(f"Token id {top} >= the model's d_vocab {model_cfg.d_vocab}.")
        if cfg.seq_len > model_cfg.n_ctx:
            raise InputError(f"seq_len {cfg.seq_len} exceeds the model's n_ctx {model_cfg.n_ctx}.")
        self.model_cfg = model_cfg
        self.model = build_model(cfg, model_cfg, self.data).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.95))
        self.train_model = ddp.wrap_model(self.model, self.dist, self.device)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.generator = torch.Generator().manual_seed(self.dist.data_seed(cfg.seed))
        self.total_steps = cfg.total_steps(self.dist.world_size)
        self.val_x, self.val_y = eval_windows(self.data.val, seq_len=cfg.seq_len, max_tokens=cfg.eval_tokens)
        self.step = 0
        self.tokens_seen = 0
        self.train_time = 0.0
        self.metrics: list[dict[str, Any]] = []
        self.loss_window: list[float] = []
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None:
            self.load(latest)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.cfg),
            "model_config": config_to_json(self.model_cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step},
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_time": self.train_time,
            "rng": ckpt.rng_state(),
            "data_generator": self.generator.get_state(),
            "metrics": [dict(r) for r in self.metrics],
            "loss_window": list(self.loss_window),
        }

    def load(self, path: str | Path) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.train_time = state["train_time"]
        ckpt.set_rng_state(state["rng"])
        generators = state.get("data_generators") or [state["data_generator"]]
        if len(generators) != self.dist.world_size:
            raise InputError(f"Checkpoint was written by {len(generators)} process(es); resume "
                             f"with the same number (now {self.dist.world_size}).")
        self.generator.set_state(generators[self.dist.rank].cpu())
        self.metrics = [dict(r) for r in state["metrics"]]
        self.loss_window = list(state["loss_window"])
        logger.info("Resumed from %s at step %d", path, self.step)

    def save(self) -> None:
        """Rank 0 writes the checkpoint; under DDP it holds every rank's data-generator state."""
        generators = ddp.gather_objects(self.generator.get_state(), self.dist)
        if self.dist.is_main:
            path = ckpt.save_checkpoint(self.run_dir, {**self.state_dict(), "data_generators": generators})
            save_weights(path.with_suffix(".safetensors"), self.model, step=self.step)
            self.save_model()
        ddp.barrier(self.dist)

    def save_model(self) -> None:
        """The model as others load it: model.safetensors + model.json (`geomlens.models.trained`)
        with the head, the kept token ids of a reduced vocabulary, and the run's provenance."""
        kept = self.data.kept
        save_trained(self.run_dir, self.model, head=self.cfg.head, head_kwargs=self.cfg.head_kwargs,
                     kept=kept, oov_id=None if kept is None else self.model_cfg.d_vocab - 1,
                     provenance={"step": self.step, "seed": self.cfg.seed,
                                 "kv_layers": self.cfg.kv_layers,
                                 "train_config": dataclasses.asdict(self.cfg)})

    # -- steps ---------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; nothing elsewhere (CPU runs stay float32 and deterministic)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def lr_multiplier(self, it: int) -> float:
        return get_lr(it, lr=1.0, warmup=self.cfg.warmup, total=self.total_steps,
                      min_lr=self.cfg.min_lr_ratio)

    def train_step(self) -> float:
        """One optimizer step; returns the training loss."""
        m = self.lr_multiplier(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * m
        x, y = get_batch(self.data.train, batch_size=self.cfg.batch_size, seq_len=self.cfg.seq_len,
                         generator=self.generator)
        x, y = x.to(self.device), y.to(self.device)
        with self.autocast():
            logits = self.train_model(x, return_type="logits")
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += x.numel() * self.dist.world_size
        return float(loss.item())

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Held-out loss, perplexity and top-1 accuracy on the fixed validation windows."""
        self.model.eval()
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(self.val_x), self.cfg.batch_size):
            x = self.val_x[i : i + self.cfg.batch_size].to(self.device)
            y = self.val_y[i : i + self.cfg.batch_size].to(self.device)
            with self.autocast():
                logits = self.model(x, return_type="logits")
            logits = logits.float().flatten(0, 1)
            total += float(F.cross_entropy(logits, y.flatten(), reduction="sum"))
            correct += int((logits.argmax(-1) == y.flatten()).sum())
            n += y.numel()
        self.model.train()
        loss = total / n
        return {"val_loss": loss, "val_perplexity": math.exp(loss), "val_accuracy": correct / n}

    # -- loop ----------------------------------------------------------------------------------
    def _log_row(self, *, evaluation: dict[str, float] | None, tokens_per_s: float) -> None:
        train_loss = sum(self.loss_window) / len(self.loss_window) if self.loss_window else math.nan
        train_loss = ddp.mean_across_ranks(train_loss, self.dist, self.device)
        self.loss_window = []
        row = {
            "step": self.step,
            "tokens": self.tokens_seen,
            "train_loss": train_loss,
            "val_loss": evaluation["val_loss"] if evaluation else math.nan,
            "val_accuracy": evaluation["val_accuracy"] if evaluation else math.nan,
            "lr": self.lr_multiplier(max(self.step - 1, 0)) * self.cfg.lr,
            "tokens_per_s": tokens_per_s,
        }
        self.metrics.append(row)
        if self.dist.is_main:
            logger.info(
                "step %d/%d  train %.4f  val %s  lr %.2e  %.0f tok/s", self.step, self.total_steps,
                train_loss, f"{row['val_loss']:.4f}" if evaluation else "-", row["lr"], tokens_per_s,
            )
            self.write_metrics()

    def write_metrics(self) -> None:
        with open(self.run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(self.metrics)

    def _evaluate(self) -> dict[str, float] | None:
        result = self.estimate_loss() if self.dist.is_main else None
        ddp.barrier(self.dist)
        return result

    def train(self, *, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` and return the summary.

        Args:
            stop_at: stop right after this step without the final evaluation or checkpoint, as if
                the process were killed there (used by the resume test).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.step == 0 and not self.metrics:
            self._log_row(evaluation=self._evaluate(), tokens_per_s=math.nan)
        row_time, row_tokens = self.train_time, self.tokens_seen
        while self.step < self.total_steps:
            tick = time.perf_counter()
            self.loss_window.append(self.train_step())
            self.train_time += time.perf_counter() - tick
            is_last = self.step == self.total_steps
            evaluate = self.step % self.cfg.eval_every == 0 or is_last
            if evaluate or self.step % self.cfg.log_every == 0:
                rate = (self.tokens_seen - row_tokens) / max(self.train_time - row_time, 1e-9)
                self._log_row(evaluation=self._evaluate() if evaluate else None, tokens_per_s=rate)
                row_time, row_tokens = self.train_time, self.tokens_seen
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 and not is_last:
                self.save()
            if stop_at is not None and self.step >= stop_at:
                return {}
        self.save()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        # The loop always evaluates its last step; reuse that row (same decision on every rank).
        if self.step == self.total_steps and self.metrics and self.metrics[-1]["step"] == self.step:
            last = self.metrics[-1]
            final = {"val_loss": last["val_loss"], "val_perplexity": math.exp(last["val_loss"]),
                     "val_accuracy": last["val_accuracy"]}
        else:
            final = self._evaluate() or {}
        head = self.model.unembed
        self._save_kernel()
        return {
            **final,
            "head": self.cfg.head,
            "model": self.model_cfg.model_name,
            "head_params": head.n_params(),
            "total_params": sum(p.numel() for p in self.model.parameters()),
            **self._kv_summary(),
            "steps": self.step,
            "tokens": self.tokens_seen,
            "tokens_per_s": self.tokens_seen / self.train_time if self.train_time > 0 else math.nan,
            "train_time_s": self.train_time,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "seed": self.cfg.seed,
            "d_vocab": self.model_cfg.d_vocab,
            "val_oov_fraction": self._oov_fraction(),
        }

    def _kv_summary(self) -> dict[str, Any]:
        """With ``kv_layers``: the map and the frozen, unused consumer K/V parameters
        (counted in ``total_params``; ``trainable_params`` excludes them)."""
        if self.cfg.kv_layers is None:
            return {}
        from geomlens.kv.layer_map import LayerMap

        unused = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
        return {"kv_layers": self.cfg.kv_layers,
                "kv_layer_types": LayerMap.for_model(self.cfg.kv_layers, self.model).layer_types,
                "kv_unused_params": unused,
                "trainable_params": sum(p.numel() for p in self.model.parameters()) - unused}

    def _oov_fraction(self) -> float | None:
        """Share of held-out targets mapped to the OOV id (None without vocab_size)."""
        if self.data.kept is None:
            return None
        return float((self.val_y == self.model_cfg.d_vocab - 1).float().mean())

    def token_scales(self) -> dict[str, Tensor]:
        """{"sigma": σ_v, "counts": training count of each id} for a head with per-token scales
        (what kernel.pt holds, on the CPU); {} for other heads."""
        head = self.model.unembed
        if not getattr(head, "has_token_scales", False):
            return {}
        counts = torch.bincount(self.data.train, minlength=self.model_cfg.d_vocab)
        return {"sigma": head.sigma().detach().cpu(), "counts": counts.cpu()}

    def _save_kernel(self) -> None:
        scales = self.token_scales()
        if self.dist.is_main and scales:
            torch.save(scales, self.run_dir / KERNEL_FILE)

    def result(self) -> TrainingResult:
        """The run as a notebook object (`geomlens.training.result.TrainingResult`): the
        summary, the metrics rows as a DataFrame, σ_v and the training counts. Call it after
        `train`; the trained model is read back from ``run_dir`` when it is first needed."""
        return TrainingResult(summary=self.summary(), metrics=pd.DataFrame(self.metrics, columns=METRIC_COLUMNS),
                              cfg=self.cfg, **self.token_scales(), run_dir=self.run_dir)
