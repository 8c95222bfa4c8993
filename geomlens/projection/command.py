"""The commands `geomlens project` and `geomlens align`: ``run_*(cfg, run_dir) -> summary`` and
their headlines.

They write their outputs into an existing ``run_dir`` and return the summary dict; creating the
run dir, seeding and writing config/env/summary/done belong to the caller (the run lifecycle).

`run_project` writes (`geomlens.projection.result.ProjectionResult.save`)
    projection.parquet, projection.csv   the table of `geomlens.projection.project` (COLUMNS)
    top_tokens.png           the top tokens of the first parameters
`run_align` writes (`geomlens.projection.result.AlignmentResult.save`)
    alignment_layers.csv     per kind (+ mean) and space: matched pairs, scores, null, p-value
    alignment_neurons.csv    neuron matching in each matched layer pair
    alignment_scores.csv     every layer x layer score (kind, space, what = observed | null_mean,
                             layer_a, layer_b, score)
    alignment_heatmap.png    embedding-space scores, one panel per kind, matches outlined
    alignment_heatmap_raw.png   the raw d_model baseline (only when d_model matches)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from geomlens.models import load_model, model_info
from geomlens.projection.api import align, project
from geomlens.projection.config import (
    AlignConfig,
    ProjectConfig,
    parse_index_spec,
    validate_align,
    validate_project,
)
from geomlens.projection.evidence_command import EvidenceConfig, run_evidence, validate_evidence
from geomlens.projection.evidence_command import headline as evidence_headline
from geomlens.projection.stitch_command import StitchConfig, run_stitch, validate_stitch
from geomlens.projection.stitch_command import headline as stitch_headline
from geomlens.runner.command import Command


def run_project(cfg: ProjectConfig, run_dir: Path) -> dict[str, Any]:
    """Project the parameters ``cfg`` names (`geomlens.projection.api.project`), save the result
    (projection.parquet/.csv, top_tokens.png) and return the summary."""
    t0 = time.perf_counter()
    model = load_model(cfg.model, device=cfg.device)
    t_load = time.perf_counter() - t0
    layers = parse_index_spec(cfg.layers, model.cfg.n_layers, what="layers")
    heads = parse_index_spec(cfg.heads, model.cfg.n_heads, what="heads")
    neurons = parse_index_spec(cfg.neurons, what="neurons")
    t1 = time.perf_counter()
    result = project(model, cfg.what, layers, heads=heads, neurons=neurons, through=cfg.through,
                     k=cfg.k, pair_tokens=cfg.pair_tokens)
    t_project = time.perf_counter() - t1
    summary = result.save(run_dir)
    return {**summary, "model": cfg.model, "model_info": model_info(model),
            "tying_note": getattr(model, "geomlens_info", {}).get("tying_note"),
            "n_layers_projected": len(layers or range(model.cfg.n_layers)),
            "load_s": round(t_load, 2), "project_s": round(t_project, 2)}


def run_align(cfg: AlignConfig, run_dir: Path) -> dict[str, Any]:
    """Align model_a with model_b (`geomlens.projection.api.align`), save the result (tables and
    heatmaps) and return the summary (headline: the "mean" kind's matching in embedding space
    vs raw vs null)."""
    t0 = time.perf_counter()
    model_a = load_model(cfg.model_a, device=cfg.device)
    model_b = load_model(cfg.model_b, device=cfg.device)
    t_load = time.perf_counter() - t0
    result = align(model_a, model_b, kinds=cfg.kinds, reduce=cfg.reduce,
                   n_permutations=cfg.n_permutations, seed=cfg.seed, k=cfg.k,
                   n_neuron_null=cfg.n_neuron_null, raw_permutations=cfg.raw_permutations)
    result.name_a, result.name_b = Path(cfg.model_a).name, Path(cfg.model_b).name
    t_align = time.perf_counter() - t0 - t_load
    summary = result.save(run_dir)
    return {**summary, "model_a": cfg.model_a, "model_b": cfg.model_b,
            "model_a_info": model_info(model_a), "model_b_info": model_info(model_b),
            "load_s": round(t_load, 2), "align_s": round(t_align, 2)}


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
