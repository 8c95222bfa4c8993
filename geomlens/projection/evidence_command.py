"""`geomlens evidence`: Dar et al.'s evidence protocol as a run (`geomlens.projection.evidence`).

Writes into the run directory
    evidence.csv          one row per (kind, layer, metric): value, bootstrap CI, shuffled
                          baseline (mean and sd over the permutations), permutation p
    evidence.png          per layer, value with CI against the baseline, one panel per kind
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geomlens.config.base import Config, choices
from geomlens.errors import InputError
from geomlens.projection.config import known_depth, parse_index_spec

RECALL_KINDS = ("mlp_in", "mlp_gate", "mlp_out", "v", "o")
PAIR_NAMES = ("kv", "vo", "qk")


@dataclass(kw_only=True)
class EvidenceConfig(Config):
    model: str = "smollm2-135m"
    """Offline model name, TransformerLens official name, or a training run directory."""
    layers: str = "all"
    """Layers: "all" or a spec such as "0,3,5-7"."""
    recall_kinds: list[str] | None = field(default=None, metadata=choices(RECALL_KINDS))
    """Recall@k kinds (mlp_in = keys, mlp_gate, mlp_out = values, v = W_V columns, o = W_O
    rows); None = those the model has."""
    pairs: list[str] | None = field(default=None, metadata=choices(PAIR_NAMES))
    """Paired parameters for Jaccard (kv: key/value of a neuron, vo: W_V/W_O, qk: W_Q/W_K of a
    head coordinate); None = all three."""
    k: int = 20
    """Top-k tokens of each parameter vector (recall)."""
    k2: int = 3
    """Top-k2 tokens of the hidden state (recall)."""
    k_abs: int = 100
    """Top tokens by |score| for Jaccard."""
    n_active: int = 5
    """Most active neurons / head coordinates per position (recall)."""
    n_segments: int = 8
    """Segments per domain of the bundled eval corpus."""
    max_tokens: int = 64
    """Tokens per segment (longer segments are truncated; the count is recorded)."""
    n_positions: int = 500
    """Random positions (>= 1 in their segment) for recall."""
    n_units: int | None = 512
    """Random units (neurons, head coordinates) per layer for Jaccard; None = all."""
    n_permutations: int = 999
    """Shuffled pairings for the baseline and the permutation p."""
    seed: int = 0
    """Seeds the positions, the unit sample, the permutations and the bootstrap."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def validate(self) -> None:
        parse_index_spec(self.layers, what="--layers")
        for name in ("k", "k2", "k_abs", "n_active", "n_segments", "max_tokens", "n_positions"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < 2:
            raise InputError("--max-tokens must be >= 2 (position 0 is skipped)")
        if self.n_units is not None and self.n_units < 2:
            raise InputError(f"--n-units must be >= 2 or none, got {self.n_units}")
        if self.n_permutations < 0:
            raise InputError("--n-permutations must be >= 0")


def validate_evidence(cfg: EvidenceConfig) -> None:
    """Before a run dir exists: the model is loadable and the layers exist (when known)."""
    n_layers = known_depth(cfg.model, "--model")
    if n_layers is not None:
        parse_index_spec(cfg.layers, n_layers, what="--layers")


def corpus_sequences(model, n_segments: int, max_tokens: int) -> tuple[list, dict, list[str]]:
    """Model token ids of the first ``n_segments`` eval segments per domain, at most
    ``max_tokens`` each (`geomlens.data.token_map` maps tokenizer ids to the model's), a note
    of what was kept, and each segment's domain."""
    from geomlens.data import load_corpus
    from geomlens.data.batching import tokenize_segments
    from geomlens.data.token_map import token_map

    rows = load_corpus(split="eval", n_segments=n_segments)
    tm = token_map(model)
    if tm.tokenizer is None:
        raise InputError("the model has no tokenizer; the corpus cannot be tokenized")
    full = tokenize_segments(tm.tokenizer, rows["text"], max_tokens=10**9)
    if len(full) != len(rows):
        raise InputError(f"{len(rows) - len(full)} corpus segments tokenize to fewer than 2 tokens")
    seqs = [tm.from_original(s[:max_tokens]) for s in full]
    n_cut = sum(len(s) > max_tokens for s in full)
    return seqs, {"n_segments": len(seqs), "n_tokens": int(sum(len(s) for s in seqs)),
                  "segments_truncated": n_cut, "max_tokens": max_tokens}, list(rows["domain"])


def run_evidence(cfg: EvidenceConfig, run_dir: Path) -> dict[str, Any]:
    """The evidence table and figure of ``cfg.model`` (`geomlens.projection.api.evidence`, module
    doc), saved into ``run_dir``; returns the summary."""
    from geomlens.models import load_model
    from geomlens.projection.api import evidence

    t0 = time.perf_counter()
    model = load_model(cfg.model, device=cfg.device)
    layers = parse_index_spec(cfg.layers, model.cfg.n_layers, what="layers")
    result = evidence(model, layers=layers, n_segments=cfg.n_segments, max_tokens=cfg.max_tokens,
                      recall_kinds=cfg.recall_kinds, pairs=cfg.pairs, k=cfg.k, k2=cfg.k2,
                      k_abs=cfg.k_abs, n_active=cfg.n_active, n_positions=cfg.n_positions,
                      n_units=cfg.n_units, n_permutations=cfg.n_permutations, seed=cfg.seed)
    result.model_name = cfg.model
    return {**result.save(run_dir), "wall_s": round(time.perf_counter() - t0, 1)}


def headline(summary: dict, run_dir: Path) -> str:
    import pandas as pd

    table = pd.DataFrame(summary["by_kind"]).T
    return (f"{summary['model']}: mean over {len(summary['layers'])} layers (layers_p_below = layers "
            f"with p < {summary['p_level']:g}, layers_p_min = at the smallest possible p "
            f"{summary['p_min']:.2g})\n" + table.to_string(float_format=lambda x: f"{x:.4g}")
            + f"\ntable: {run_dir / 'evidence.csv'}")
