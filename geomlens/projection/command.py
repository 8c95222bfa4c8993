"""The commands `geomlens project` and `geomlens align`: ``run_*(cfg, run_dir) -> summary`` and
their headlines.

They write their outputs into an existing ``run_dir`` and return the summary dict; creating the
run dir, seeding and writing config/env/summary/done belong to the caller (the run lifecycle).

`run_project` writes
    projection.parquet, projection.csv   the table of `geomlens.projection.project` (COLUMNS)
`run_align` writes
    alignment_layers.csv     per kind (+ mean) and space: matched pairs, scores, null, p-value
    alignment_neurons.csv    neuron matching in each matched layer pair
    alignment_scores.csv     every layer x layer score (kind, space, what = observed | null_mean,
                             layer_a, layer_b, score)
    alignment_heatmap.png    embedding-space scores, one panel per kind, matches outlined
    alignment_heatmap_raw.png   the raw d_model baseline (only when d_model matches)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.models import load_model
from geomlens.models.tokens import load_token_stream
from geomlens.models.trained import is_trained
from geomlens.models.zoo import OFFLINE_MODELS
from geomlens.projection.alignment import align_models
from geomlens.projection.config import (
    AlignConfig,
    ProjectConfig,
    parse_index_spec,
    validate_align,
    validate_project,
)
from geomlens.projection.evidence_command import EvidenceConfig, run_evidence, validate_evidence
from geomlens.projection.evidence_command import headline as evidence_headline
from geomlens.projection.figures import plot_alignment_heatmap
from geomlens.projection.kinds import PAIR_KINDS, available_kinds
from geomlens.projection.project import project_parameters
from geomlens.projection.stitch_command import StitchConfig, run_stitch, validate_stitch
from geomlens.projection.stitch_command import headline as stitch_headline
from geomlens.runner.command import Command

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def frequent_token_ids(model: HookedTransformer, name: str, n: int) -> Int[Tensor, "n"]:
    """The n most frequent model token ids of the bundled train_cpu text (ties: lower id).

    Runs with a reduced vocabulary already number their tokens by training frequency, so their
    ids 0..n−1 are used (the OOV id excluded)."""
    tm = token_map(model)
    if tm.kept is not None:
        return torch.arange(min(n, len(tm.kept)))
    if name in OFFLINE_MODELS or is_trained(name):
        tokenizer = model.geomlens_info["tokenizer"] if is_trained(name) else name
        stream = load_token_stream("train_cpu", tokenizer_name=tokenizer)
        counts = torch.bincount(stream, minlength=model.cfg.d_vocab)[: model.cfg.d_vocab]
        order = sorted(range(len(counts)), key=lambda v: (-int(counts[v]), v))
        return torch.tensor(order[: min(n, int((counts > 0).sum()))])
    raise InputError(f"pair_tokens needs token counts, available for offline models and run dirs; "
                     f"for {name!r} set pair_tokens to None (the whole vocabulary).")


def _examples(table: pd.DataFrame, n: int = 5) -> dict[str, str]:
    """Headline: the top-n tokens (pairs) of the first parameter listed for each kind."""
    out = {}
    top = table[table["direction"] == "top"]
    ids = top[["layer", "head", "neuron"]].astype("float64").fillna(-1)
    for kind in top["kind"].unique():
        sel = top[top["kind"] == kind]
        first = ids.loc[sel.index].iloc[0]
        sel = sel[(ids.loc[sel.index] == first).all(axis=1)].head(n)
        label = "".join(f"{c[0].upper()}{int(v)}" for c, v in first.items() if v >= 0)
        if kind in PAIR_KINDS:
            toks = [f"{s!r}->{t!r}" for s, t in zip(sel["src_token"], sel["token"])]
        else:
            toks = [repr(t) for t in sel["token"]]
        out[f"{kind} {label}"] = ", ".join(toks)
    return out


def run_project(cfg: ProjectConfig, run_dir: Path) -> dict[str, Any]:
    """Project the parameters ``cfg`` names; write projection.parquet/.csv; return the summary."""
    t0 = time.perf_counter()
    model = load_model(cfg.model, device=cfg.device)
    t_load = time.perf_counter() - t0
    layers = parse_index_spec(cfg.layers, model.cfg.n_layers, what="layers")
    heads = parse_index_spec(cfg.heads, model.cfg.n_heads, what="heads")
    neurons = parse_index_spec(cfg.neurons, what="neurons")
    kinds = list(cfg.what) if cfg.what is not None else available_kinds(model)
    pair_ids = None
    if cfg.pair_tokens is not None and set(kinds) & set(PAIR_KINDS):
        pair_ids = frequent_token_ids(model, cfg.model, cfg.pair_tokens)
    t1 = time.perf_counter()
    table = project_parameters(model, kinds, layers, heads=heads, neurons=neurons,
                               through=cfg.through, k=cfg.k, pair_token_ids=pair_ids)
    t_project = time.perf_counter() - t1
    run_dir = Path(run_dir)
    search = table.attrs.pop("pair_search", [])
    table.to_parquet(run_dir / "projection.parquet", index=False)
    table.to_csv(run_dir / "projection.csv", index=False)
    fractions = [s["fraction_evaluated"] for s in search]
    return {
        "model": cfg.model, "tying_note": getattr(model, "geomlens_info", {}).get("tying_note"),
        "kinds": kinds, "n_layers_projected": len(layers or range(model.cfg.n_layers)),
        "n_rows": len(table), "rows_per_kind": table.groupby("kind").size().to_dict(),
        "pair_tokens": None if pair_ids is None else len(pair_ids),
        "pair_heads_searched": len(search),
        "pair_fraction_evaluated_mean": float(np.mean(fractions)) if fractions else None,
        "examples": _examples(table),
        "load_s": round(t_load, 2), "project_s": round(t_project, 2),
        "tables": ["projection.parquet", "projection.csv"],
    }


def _scores_long(al) -> pd.DataFrame:
    rows = []
    for space, sc in al.spaces.items():
        for what, scores in (("observed", sc.scores), ("null_mean", sc.null_scores)):
            for key, S in scores.items():
                for (a, b), v in np.ndenumerate(S):
                    rows.append({"kind": key, "space": space, "what": what, "layer_a": a,
                                 "layer_b": b, "score": v})
    return pd.DataFrame(rows)


def run_align(cfg: AlignConfig, run_dir: Path) -> dict[str, Any]:
    """Align model_a with model_b (`geomlens.projection.alignment`); write tables and heatmaps;
    return the summary (headline: the "mean" kind's matching in embedding space vs raw vs null)."""
    t0 = time.perf_counter()
    model_a = load_model(cfg.model_a, device=cfg.device)
    model_b = load_model(cfg.model_b, device=cfg.device)
    t_load = time.perf_counter() - t0
    al = align_models(model_a, model_b, kinds=cfg.kinds, reduce=cfg.reduce,
                      n_permutations=cfg.n_permutations, seed=cfg.seed, k=cfg.k,
                      n_neuron_null=cfg.n_neuron_null, raw_permutations=cfg.raw_permutations)
    t_align = time.perf_counter() - t0 - t_load
    run_dir = Path(run_dir)
    layers = al.layer_table()
    layers.to_csv(run_dir / "alignment_layers.csv", index=False)
    al.neurons.to_csv(run_dir / "alignment_neurons.csv", index=False)
    _scores_long(al).to_csv(run_dir / "alignment_scores.csv", index=False)
    names = (Path(cfg.model_a).name, Path(cfg.model_b).name)
    plot_alignment_heatmap(al.scores, run_dir / "alignment_heatmap.png", label_a=names[0],
                           label_b=names[1], title=f"|corr| in embedding space ({cfg.reduce}); {al.shared.note}")
    if al.raw_scores:
        plot_alignment_heatmap(al.raw_scores, run_dir / "alignment_heatmap_raw.png", label_a=names[0],
                               label_b=names[1], title=f"baseline: |corr| of raw d_model vectors ({cfg.reduce})")
    head = layers[layers["kind"] == "mean"].set_index("space")
    neurons = al.neurons.groupby("kind")[["neuron_corr", "neuron_corr_null", "neuron_corr_raw",
                                          "neuron_corr_raw_null", "topk_overlap",
                                          "topk_overlap_random"]].mean()
    return {
        "model_a": cfg.model_a, "model_b": cfg.model_b, "shared_vocab": al.shared.note,
        "kinds": al.kinds, "reduce": cfg.reduce,
        "layer_matching": head.drop(columns=["kind"]).to_dict(orient="index"),
        "neurons": neurons.to_dict(orient="index"),
        "load_s": round(t_load, 2), "align_s": round(t_align, 2),
        "tables": ["alignment_layers.csv", "alignment_neurons.csv", "alignment_scores.csv"],
    }


def project_headline(summary: dict, run_dir: Path) -> str:
    lines = [f"{summary['n_rows']} rows ({', '.join(summary['kinds'])}); "
             f"first entries of each kind:"]
    lines += [f"  {key}: {tokens}" for key, tokens in list(summary.get("examples", {}).items())[:12]]
    lines.append(f"table: {run_dir / 'projection.parquet'} (and .csv)")
    return "\n".join(lines)


def align_headline(summary: dict, run_dir: Path) -> str:
    table = pd.DataFrame(summary["layer_matching"]).T
    return (f"{summary['model_a']} vs {summary['model_b']} ({summary['shared_vocab']})\n"
            + table.to_string(float_format=lambda x: f"{x:.4g}")
            + f"\nheatmap: {run_dir / 'alignment_heatmap.png'}")


COMMANDS = (
    Command("project", ProjectConfig, run_project, validate=validate_project,
            headline=project_headline, help=(
                "project attention/MLP parameters onto the vocabulary (Dar et al. 2022), "
                "no forward pass")),
    Command("align", AlignConfig, run_align, validate=validate_align, headline=align_headline,
            help="align two models that share a vocabulary in embedding space (layers and neurons)"),
    Command("evidence", EvidenceConfig, run_evidence, validate=validate_evidence,
            headline=evidence_headline, help=(
                "Dar et al.'s evidence: recall@k of parameters vs the hidden states that activate "
                "them, Jaccard@100 of paired parameters, each against shuffled pairings")),
    Command("stitch", StitchConfig, run_stitch, validate=validate_stitch, headline=stitch_headline,
            help="a classifier trained on model A carried into model B through E_A^+ E_B, B untrained"),
)
