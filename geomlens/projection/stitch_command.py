"""`geomlens stitch`: a 5-domain classifier trained on model A, carried into model B through the
embedding matrices (`geomlens.projection.stitch`), B untrained.

Per split seed: the bundled eval corpus (``n_segments`` per domain, ``max_tokens`` each) is split
into train and test segments, stratified by domain. A's classifier is fit on A's train features;
reported on the test segments:
    acc_a          A's classifier on A's features
    acc_translated A's classifier translated into B, on B's features (B gets no gradient)
    acc_ceiling    a classifier fit directly on B's train features
    acc_perm_*     the translation with B's shared-token rows permuted (n_permutations);
                   p = (1 + #{perm >= translated}) / (1 + n)
    chance         1 / number of domains
Each accuracy has a Wilson 95% interval over the test segments; the summary gives the mean over
seeds with a t interval. Writes stitch.csv (one row per seed and direction) and stitch.png
(`geomlens.projection.figures.stitch_figure`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geomlens.config.base import Config
from geomlens.errors import InputError
from geomlens.projection.config import _check_model


@dataclass(kw_only=True)
class StitchConfig(Config):
    model_a: str = "smollm2-135m"
    """Model the classifier is trained on: offline name or a training run directory."""
    model_b: str | None = None
    """Model it is carried into (required; shares the tokenizer with model_a)."""
    both_directions: bool = True
    """Also carry a classifier from model_b into model_a."""
    split_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One train/test split (and classifier seed) per entry."""
    n_segments: int = 60
    """Segments per domain of the bundled eval corpus."""
    max_tokens: int = 32
    """Tokens per segment (first ones; the number truncated is recorded)."""
    test_fraction: float = 0.5
    """Share of each domain's segments held out for test."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regression (on standardised features)."""
    through: str = "W_U"
    """Token matrix of both models used for the translation ("W_E" or "W_U")."""
    n_permutations: int = 999
    """Permutations of model B's token rows for the null."""
    seed: int = 0
    """Seeds the permutations."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def validate(self) -> None:
        if self.model_b is None:
            raise InputError("--model-b is required: an offline model name or a training run directory")
        if not 0 < self.test_fraction < 1:
            raise InputError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if self.n_segments < 4 or self.max_tokens < 1 or not self.split_seeds:
            raise InputError("--n-segments must be >= 4, --max-tokens >= 1, --split-seeds non-empty")
        if self.through not in ("W_E", "W_U"):
            raise InputError(f"--through must be W_E or W_U, not {self.through!r}")
        if self.n_permutations < 0:
            raise InputError("--n-permutations must be >= 0")


def validate_stitch(cfg: StitchConfig) -> None:
    _check_model(cfg.model_a, "--model-a")
    _check_model(cfg.model_b, "--model-b")


def run_stitch(cfg: StitchConfig, run_dir: Path) -> dict[str, Any]:
    """Both models loaded, then `geomlens.projection.api.stitch`; saves stitch.csv and
    stitch.png; returns the summary."""
    from geomlens.models import load_model
    from geomlens.projection.api import stitch

    t0 = time.perf_counter()
    model_a, model_b = (load_model(m, device=cfg.device) for m in (cfg.model_a, cfg.model_b))
    result = stitch(model_a, model_b, n_segments=cfg.n_segments, max_tokens=cfg.max_tokens,
                    split_seeds=cfg.split_seeds, test_fraction=cfg.test_fraction, C=cfg.C,
                    through=cfg.through, n_permutations=cfg.n_permutations, seed=cfg.seed,
                    both_directions=cfg.both_directions)
    result.model_a, result.model_b = cfg.model_a, cfg.model_b
    return {**result.save(run_dir), "wall_s": round(time.perf_counter() - t0, 1)}


def headline(summary: dict, run_dir: Path) -> str:
    lines = [f"a = {summary['model_a']}, b = {summary['model_b']} ({summary['shared_vocab']})"]
    for direction, entry in summary["by_direction"].items():
        parts = [f"{k} {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in entry.items()]
        lines.append(f"  {direction}: " + "; ".join(parts))
    return "\n".join(lines + [f"table: {run_dir / 'stitch.csv'}"])
