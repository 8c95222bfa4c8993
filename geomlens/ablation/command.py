"""The ``ablate`` experiment kind: config -> run dir with a table, heatmaps and a summary.

Outputs in ``run_dir``:
    ablation.csv              one row per condition (columns: see `geomlens.ablation.sweep`)
    heatmap_delta_loss.png    layer x component heatmap of delta_loss
    heatmap_delta_metric.png  the same for delta NDCG@k
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from geomlens.ablation.config import AblateConfig
from geomlens.ablation.figures import plot_ablation_heatmap
from geomlens.ablation.sweep import Condition, ablation_table, sweep_conditions
from geomlens.data.batching import batch_sequences
from geomlens.data.source import load_model_segments
from geomlens.device import resolve_device
from geomlens.errors import InputError
from geomlens.models import load_model
from geomlens.models.inputs import check_layers, check_model_inputs
from geomlens.runner.command import Command
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def conditions_for(cfg: AblateConfig, n_layers: int) -> list[Condition]:
    """The conditions a config asks for, checked against the model's depth."""
    layers = list(range(n_layers)) if cfg.layers is None else list(cfg.layers)
    check_layers(layers, n_layers)
    if cfg.sweep:
        return sweep_conditions(layers)
    return [Condition(tuple(layers), cfg.component)]


def run_ablation(cfg: AblateConfig, run_dir: Path, *, model: HookedTransformer | None = None) -> dict:
    """Run the ablations of ``cfg`` and write their outputs into ``run_dir``.

    ``model`` (optional) is used instead of loading ``cfg.model``; it needs a tokenizer. Under
    torchrun the batches are split over the ranks (`geomlens.runner.sharding`) and rank 0
    writes the run directory.
    """
    ranks = Ranks.start(resolve_device(cfg.device))
    with ranks.together():
        table, clean, n_sequences = _measure(cfg, model, ranks)
    if not ranks.is_main:
        return {}
    run_dir = Path(run_dir)
    table.to_csv(run_dir / "ablation.csv", index=False)
    plot_ablation_heatmap(table, run_dir / "heatmap_delta_loss.png", value="delta_loss")
    plot_ablation_heatmap(table, run_dir / "heatmap_delta_metric.png", value="delta_metric")
    worst = table.loc[table["delta_loss"].idxmax()]
    return {
        "model": cfg.model,
        "method": cfg.method,
        "metric": f"ndcg@{cfg.k}",
        "n_sequences": n_sequences,
        "n_tokens": clean["n_tokens"],
        "clean_loss": clean["loss"],
        "clean_metric": clean["metric"],
        "clean_top1_agree": clean["top1_agree"],
        "n_conditions": len(table),
        "max_delta_loss": {"layer": worst["layer"], "component": worst["component"],
                           "delta_loss": float(worst["delta_loss"])},
        "table": "ablation.csv",
    }


def _measure(cfg: AblateConfig, model: HookedTransformer | None,
             ranks: Ranks) -> tuple[pd.DataFrame, dict, int]:
    """(the table, the clean row, the number of sequences evaluated), on every rank."""
    if model is None:
        model = load_model(cfg.model, device=ranks.device)
    conditions = conditions_for(cfg, model.cfg.n_layers)
    seqs, _, _ = load_model_segments(cfg, model)
    pad = getattr(model.tokenizer, "eos_token_id", None) or 0  # padded positions are masked
    batches = list(batch_sequences(seqs, batch_size=cfg.batch_size, pad_id=pad))
    if cfg.method == "resample" and len(batches[-1][0]) < 2:
        logger.warning("Dropping the last batch: one sequence cannot be resampled.")
        batches = batches[:-1]
    if not batches:
        raise InputError("No batch to evaluate; load more segments.")
    if ranks.is_main:
        logger.info("ablate: %d conditions x %d sequences (%s), %d rank(s)", len(conditions),
                    len(seqs), cfg.method, ranks.info.world_size)
    table, clean = ablation_table(model, batches, conditions, method=cfg.method, k=cfg.k,
                                  seed=cfg.seed, chunk_size=cfg.chunk_size, ranks=ranks)
    return table, clean, sum(len(t) for t, _ in batches)


def validate_ablation(cfg: AblateConfig) -> None:
    """Model name, text, lengths and layers, checked before a run directory exists."""
    check_model_inputs(cfg, layers=cfg.layers)




def headline(summary: dict, run_dir: Path) -> str:
    return (f"ablate: {summary['n_conditions']} conditions; clean loss {summary['clean_loss']:.4f}, "
            f"clean {summary['metric']} {summary['clean_metric']:.4f}; table: {run_dir / 'ablation.csv'}")


COMMANDS = (Command(
    "ablate", AblateConfig, run_ablation, validate=validate_ablation, headline=headline,
    help="zero/mean/resample ablation of attention/MLP outputs: delta loss and delta NDCG@k"),)
