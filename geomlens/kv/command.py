"""The ``kv`` run: ``validate_kv(cfg)`` then ``run_kv(cfg, run_dir) -> summary``.

Outputs in ``run_dir`` (written by `geomlens.kv.result.KVResult.save`, the same code a
notebook's ``result.save(run_dir)`` runs):
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
from pathlib import Path
from typing import Any

import torch

from geomlens.data.source import load_model_segments
from geomlens.device import resolve_device
from geomlens.errors import InputError
from geomlens.kv.api import measure_kv
from geomlens.kv.config import KVConfig
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.result import KVResult
from geomlens.models import load_model
from geomlens.models.inputs import check_model_inputs
from geomlens.models.zoo import check_model_name
from geomlens.runner.command import Command
from geomlens.runner.record_log import RECORDS_DIR
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


def _measure(cfg: KVConfig, model, ranks: Ranks, records: Path) -> KVResult:
    """The `KVResult` of ``cfg``, on every rank."""
    if model is None:
        model = load_model(cfg.model, device=ranks.device)
    if cfg.max_tokens > model.cfg.n_ctx:
        raise InputError(f"max_tokens {cfg.max_tokens} exceeds {cfg.model}'s context of {model.cfg.n_ctx}.")
    seqs, ids, domains = load_model_segments(cfg, model)
    if not seqs:
        raise InputError("No segments to evaluate; check domains/texts/n_segments.")
    return measure_kv(model, seqs, cfg, segment_ids=ids, domains=domains, ranks=ranks,
                      records=records)


def run_kv(cfg: KVConfig, run_dir: Path, *, model=None) -> dict[str, Any]:
    """Measure clean vs first-layer-K/V loss (and the sweeps); write tables/figures to
    ``run_dir`` and return the summary. ``model`` (optional, with a tokenizer) is used instead
    of loading ``cfg.model``. Under torchrun the batches of every pass are split over the ranks
    (`geomlens.runner.sharding`) and rank 0 writes the run directory. Rank 0 keeps every
    pass's batch records in ``run_dir/records`` (a resumed run reads them back; the lifecycle
    deletes them once the run is done)."""
    validate_kv(cfg)
    torch.manual_seed(cfg.seed)
    ranks = Ranks.start(resolve_device(cfg.device))
    with ranks.together():
        result = _measure(cfg, model, ranks, Path(run_dir) / RECORDS_DIR)
    if not ranks.is_main:
        return {}
    return result.save(run_dir)


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
    "kv", KVConfig, run_kv, validate=validate_kv, headline=headline, resumable=True,
    keeps_records=True,
    help="first-layer-only K/V on a pretrained model: clean vs patched loss, layer sweeps"),)
