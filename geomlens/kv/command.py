"""The ``kv`` run: ``validate_kv(cfg)`` then ``run_kv(cfg, run_dir) -> summary``.

Outputs in ``run_dir``:
    per_segment.csv      segment id, domain, predicted tokens, CE sums clean / patched
    losses.csv           per domain + all: clean / patched loss and perplexity, Δ, 95% CIs
    sweep_layer.csv      (sweep) only layer l takes layer 0's K/V: loss, Δ, CIs, per l ≥ 1
    sweep_ge_m.csv       (sweep) layers ≥ m take layer 0's K/V: loss, Δ, CIs, per m ≥ 1
    figures/losses_by_domain.png, figures/layer_sensitivity.png, figures/ge_m_curve.png
The returned summary holds ``clean_loss`` and ``patched_loss`` (nats per predicted token) with
their CIs, the cache sizes per token (eqs. 5.17–5.18) and, with the sweep, the most sensitive
layers and the ≥m curve's endpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from geomlens.data.source import load_model_segments
from geomlens.device import resolve_device
from geomlens.errors import InputError
from geomlens.kv.cache import expected_cache_bytes
from geomlens.kv.config import KVConfig
from geomlens.kv.evaluate import loss_rows, segment_losses
from geomlens.kv.figures import plot_domain_losses, plot_ge_m_curve, plot_layer_sensitivity
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import check_patchable, key_recipe
from geomlens.models import load_model, model_info
from geomlens.models.inputs import check_model_inputs
from geomlens.models.zoo import check_model_name
from geomlens.runner.command import Command
from geomlens.runner.sharding import Ranks

logger = logging.getLogger(__name__)


def validate_kv(cfg: KVConfig) -> None:
    """Checks before any run dir exists: model name, text and lengths, and the layer map
    against the model's depth where the zoo knows it (``lckv`` is refused: its source, the top
    layer, runs after its consumers, so one forward pass cannot compute it)."""
    check_model_inputs(cfg)
    if cfg.layers.strip().lower() == "lckv":
        raise InputError("--layers lckv takes K/V from the top layer, above its consumers; one "
                         "forward pass cannot compute it (see geomlens.kv.layer_map)")
    entry = check_model_name(cfg.model)
    if entry is not None:
        LayerMap.parse(cfg.layers, entry.n_layers)


def _condition(model, seqs, counts, clean, layer_map, cfg: KVConfig, ranks: Ranks,
               **labels) -> dict[str, Any]:
    sums, _ = segment_losses(model, seqs, layer_map=layer_map, mode=cfg.mode,
                             batch_size=cfg.batch_size, ranks=ranks)
    row = loss_rows(clean, sums, counts, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed).iloc[0]
    if ranks.is_main:
        logger.info("kv sweep %s: loss %.4f (delta %+.4f)", labels, row["patched_loss"],
                    row["delta_loss"])
    keep = ["patched_loss", "patched_loss_low", "patched_loss_high",
            "delta_loss", "delta_loss_low", "delta_loss_high"]
    return {**labels, "layer_types": layer_map.layer_types, **{k: float(row[k]) for k in keep}}


def sweep_tables(model, seqs, counts, clean, cfg: KVConfig,
                 ranks: Ranks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-layer sensitivity (only layer l takes layer 0's K/V) and the ≥m curve."""
    n = model.cfg.n_layers
    per_layer = pd.DataFrame([_condition(model, seqs, counts, clean, LayerMap.only(layer, n), cfg,
                                         ranks, layer=layer) for layer in range(1, n)])
    ge_m = pd.DataFrame([_condition(model, seqs, counts, clean, LayerMap.parse(f">={m}", n), cfg,
                                    ranks, m=m, n_shared=n - m) for m in range(1, n)])
    return per_layer, ge_m


def write_sweeps(per_layer: pd.DataFrame, ge_m: pd.DataFrame, counts, clean, cfg: KVConfig,
                 run_dir: Path) -> dict[str, Any]:
    """The sweeps' tables and figures, and their summary entries."""
    per_layer.to_csv(run_dir / "sweep_layer.csv", index=False)
    ge_m.to_csv(run_dir / "sweep_ge_m.csv", index=False)
    clean_loss = float(clean.sum() / counts.sum())
    tag = f"{cfg.model}, mode {cfg.mode}"
    figs = [plot_layer_sensitivity(per_layer, run_dir / "figures" / "layer_sensitivity.png",
                                   title=f"Only layer l uses layer 0's K/V ({tag})"),
            plot_ge_m_curve(ge_m, clean_loss, run_dir / "figures" / "ge_m_curve.png",
                            title=f"Layers ≥ m use layer 0's K/V ({tag})")]
    top = per_layer.sort_values("delta_loss", ascending=False).head(3)
    first, last = ge_m.iloc[0], ge_m.iloc[-1]
    return {
        "most_sensitive_layers": [{"layer": int(r.layer), "delta_loss": r.delta_loss,
                                   "ci": [r.delta_loss_low, r.delta_loss_high]} for r in top.itertuples()],
        "ge_m_endpoints": {f"m={int(r.m)}": {"patched_loss": r.patched_loss, "delta_loss": r.delta_loss,
                                            "ci": [r.patched_loss_low, r.patched_loss_high]}
                           for r in (first, last)},
        "figures": figs,
    }


def _cache_sizes(model, layer_map: LayerMap) -> dict[str, Any]:
    full = expected_cache_bytes(model.cfg, LayerMap.none(model.cfg.n_layers), 1)
    shared = expected_cache_bytes(model.cfg, layer_map, 1)
    return {"cache_bytes_per_token_standard": full, "cache_bytes_per_token_patched": shared,
            "cache_reduction": full / shared}


@dataclass
class _Measured:
    """Everything ``kv`` computes (on every rank under torchrun) before rank 0 writes it."""

    model: Any
    layer_map: LayerMap
    ids: list[str]
    domains: list[str]
    clean: np.ndarray
    patched: np.ndarray
    counts: np.ndarray
    sweeps: tuple[pd.DataFrame, pd.DataFrame] | None


def _measure(cfg: KVConfig, model, ranks: Ranks) -> _Measured:
    if model is None:
        model = load_model(cfg.model, device=ranks.device)
    if cfg.max_tokens > model.cfg.n_ctx:
        raise InputError(f"max_tokens {cfg.max_tokens} exceeds {cfg.model}'s context of {model.cfg.n_ctx}.")
    layer_map = LayerMap.for_model(cfg.layers, model)
    check_patchable(model, layer_map, cfg.mode)
    seqs, ids, domains = load_model_segments(cfg, model)
    if not seqs:
        raise InputError("No segments to evaluate; check domains/texts/n_segments.")
    if ranks.is_main:
        logger.info("kv: %s, %d segments, %d tokens, map %s, %d rank(s)", cfg.model, len(seqs),
                    sum(len(s) for s in seqs), layer_map.layer_types, ranks.info.world_size)
    clean, counts = segment_losses(model, seqs, batch_size=cfg.batch_size, ranks=ranks)
    patched, _ = segment_losses(model, seqs, layer_map=layer_map, mode=cfg.mode,
                                batch_size=cfg.batch_size, ranks=ranks)
    sweeps = sweep_tables(model, seqs, counts, clean, cfg, ranks) if cfg.sweep else None
    return _Measured(model, layer_map, ids, domains, clean, patched, counts, sweeps)


def run_kv(cfg: KVConfig, run_dir: Path, *, model=None) -> dict[str, Any]:
    """Measure clean vs first-layer-K/V loss (and the sweeps); write tables/figures to
    ``run_dir`` and return the summary. ``model`` (optional, with a tokenizer) is used instead
    of loading ``cfg.model``. Under torchrun the batches of every pass are split over the ranks
    (`geomlens.runner.sharding`) and rank 0 writes the run directory."""
    validate_kv(cfg)
    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    ranks = Ranks.start(resolve_device(cfg.device))
    with ranks.together():
        m = _measure(cfg, model, ranks)
    if not ranks.is_main:
        return {}
    pd.DataFrame({"segment_id": m.ids, "domain": m.domains, "n_predicted": m.counts,
                  "clean_ce_sum": m.clean, "patched_ce_sum": m.patched}).to_csv(
        run_dir / "per_segment.csv", index=False)
    losses = loss_rows(m.clean, m.patched, m.counts, m.domains, n_bootstrap=cfg.n_bootstrap,
                       seed=cfg.seed)
    losses.to_csv(run_dir / "losses.csv", index=False)
    figs = [plot_domain_losses(losses, run_dir / "figures" / "losses_by_domain.png",
                               title=f"{cfg.model}: clean vs layers {cfg.layers} ({cfg.mode})")]
    overall = losses[losses.domain == "all"].iloc[0]
    summary: dict[str, Any] = {
        "model": cfg.model, "mode": cfg.mode, "layers": cfg.layers,
        "layer_types": m.layer_map.layer_types, "key_recipe": key_recipe(m.model),
        "n_layers": m.model.cfg.n_layers, "n_segments": len(m.ids),
        "n_predicted_tokens": int(m.counts.sum()),
        **{k: float(overall[k]) for k in losses.columns if k not in ("domain", "n_segments", "n_tokens")},
        "per_domain": {r.domain: {"clean_loss": r.clean_loss, "patched_loss": r.patched_loss,
                                  "delta_loss": r.delta_loss} for r in losses.itertuples()},
        **_cache_sizes(m.model, m.layer_map), "model_info": model_info(m.model),
    }
    if m.sweeps is not None:
        sweeps = write_sweeps(*m.sweeps, m.counts, m.clean, cfg, run_dir)
        figs += sweeps.pop("figures")
        summary.update(sweeps)
    summary["figures"] = [str(Path(p).relative_to(run_dir)) for p in figs]
    summary["wall_time_s"] = time.perf_counter() - t0
    return summary


def headline(summary: dict, run_dir: Path) -> str:
    def ci(name: str) -> str:
        low, high = summary.get(f"{name}_low"), summary.get(f"{name}_high")
        extra = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
        return f"{summary[name]:.4f}{extra}"

    lines = [f"{summary['model']}: layers {summary['layers']} ({summary['mode']}), layer_types "
             f"{summary['layer_types']}, {summary['n_predicted_tokens']} predicted tokens",
             f"clean loss   {ci('clean_loss')} nats",
             f"patched loss {ci('patched_loss')} nats"]
    if "delta_loss" in summary:
        lines.append(f"delta        {ci('delta_loss')} nats")
    lines.append(f"per domain: {run_dir / 'losses.csv'}")
    return "\n".join(lines)


COMMANDS = (Command(
    "kv", KVConfig, run_kv, validate=validate_kv, headline=headline,
    help="first-layer-only K/V on a pretrained model: clean vs patched loss, layer sweeps"),)
