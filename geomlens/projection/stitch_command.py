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
seeds with a t interval. Writes stitch.csv (one row per seed and direction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


def wilson(acc: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``acc`` over ``n`` trials."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    return float(centre - half), float(centre + half)


def stitch_rows(feats: dict, tokens: dict, y: np.ndarray, cfg: StitchConfig) -> list[dict]:
    """One row per (split seed, direction) (module doc)."""
    from sklearn.model_selection import train_test_split

    from geomlens.projection.stitch import (
        fit_classifier,
        permuted_accuracies,
        translate,
        translation,
    )

    dirs = [("a", "b")] + ([("b", "a")] if cfg.both_directions else [])
    rows = []
    for s in cfg.split_seeds:
        tr, te = train_test_split(np.arange(len(y)), test_size=cfg.test_fraction, stratify=y, random_state=s)
        for src, dst in dirs:
            clf = fit_classifier(feats[src][tr], y[tr], C=cfg.C, seed=s)
            moved = translate(clf, translation(tokens[src], tokens[dst]))
            ceiling = fit_classifier(feats[dst][tr], y[tr], C=cfg.C, seed=s)
            perm = permuted_accuracies(clf, tokens[src], tokens[dst], feats[dst][te], y[te],
                                       n_permutations=cfg.n_permutations, seed=cfg.seed + s)
            row = {"split_seed": s, "direction": f"{src}->{dst}", "n_train": len(tr), "n_test": len(te),
                   "chance": 1 / len(np.unique(y)),
                   "acc_a": clf.accuracy(feats[src][te], y[te]),
                   "acc_translated": moved.accuracy(feats[dst][te], y[te]),
                   "acc_ceiling": ceiling.accuracy(feats[dst][te], y[te]),
                   "acc_perm_mean": float(perm.mean()) if len(perm) else np.nan,
                   "acc_perm_q95": float(np.quantile(perm, 0.95)) if len(perm) else np.nan,
                   "n_permutations": len(perm)}
            row["p"] = float((1 + (perm >= row["acc_translated"]).sum()) / (1 + len(perm))) if len(perm) else np.nan
            for key in ("acc_a", "acc_translated", "acc_ceiling"):
                row[f"{key}_lo"], row[f"{key}_hi"] = wilson(row[key], len(te))
            rows.append(row)
    return rows


def seed_summary(table: pd.DataFrame) -> dict:
    """Per direction: mean over split seeds of each accuracy, with a t 95% interval."""
    from scipy import stats

    out = {}
    for direction, df in table.groupby("direction"):
        entry = {}
        for key in ("acc_a", "acc_translated", "acc_ceiling", "acc_perm_mean", "p"):
            v = df[key].to_numpy(dtype=float)
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
            entry[key] = {"mean": float(v.mean()), "ci_low": float(v.mean() - half),
                          "ci_high": float(v.mean() + half)}
        out[direction] = entry
    return out


def run_stitch(cfg: StitchConfig, run_dir: Path) -> dict[str, Any]:
    """Features of both models, then `stitch_rows`; writes stitch.csv; returns the summary."""
    from geomlens.data import DOMAINS
    from geomlens.models import load_model
    from geomlens.projection.alignment import shared_vocabulary
    from geomlens.projection.evidence_command import corpus_sequences
    from geomlens.projection.kinds import token_matrix
    from geomlens.projection.stitch import segment_features

    t0 = time.perf_counter()
    models = {"a": load_model(cfg.model_a, device=cfg.device), "b": load_model(cfg.model_b, device=cfg.device)}
    shared = shared_vocabulary(models["a"], models["b"])
    feats, corpus = {}, {}
    for key, model in models.items():
        seqs, corpus[key], domains = corpus_sequences(model, cfg.n_segments, cfg.max_tokens)
        feats[key] = segment_features(model, seqs)
    y = np.array([DOMAINS.index(d) for d in domains])
    rows_of = {"a": shared.rows_a, "b": shared.rows_b}
    tokens = {key: token_matrix(m, cfg.through).detach()[rows_of[key].to(m.W_E.device)].cpu()
              for key, m in models.items()}
    table = pd.DataFrame(stitch_rows(feats, tokens, y, cfg))
    table.to_csv(Path(run_dir) / "stitch.csv", index=False)
    return {"model_a": cfg.model_a, "model_b": cfg.model_b, "shared_vocab": shared.note,
            "corpus": corpus, "by_direction": seed_summary(table),
            "wall_s": round(time.perf_counter() - t0, 1), "tables": ["stitch.csv"]}


def headline(summary: dict, run_dir: Path) -> str:
    lines = [f"a = {summary['model_a']}, b = {summary['model_b']} ({summary['shared_vocab']})"]
    for direction, entry in summary["by_direction"].items():
        parts = [f"{k} {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in entry.items()]
        lines.append(f"  {direction}: " + "; ".join(parts))
    return "\n".join(lines + [f"table: {run_dir / 'stitch.csv'}"])
