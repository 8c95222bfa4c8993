"""The ``ablate`` experiment kind: config -> run dir with a table, heatmaps and a summary.

Outputs in ``run_dir`` (written by `geomlens.ablation.result.AblationResult.save`, the same
code a notebook's ``result.save(run_dir)`` runs):
    ablation.csv              one row per condition (columns: see `geomlens.ablation.sweep`)
    heatmap_delta_loss.png    layer x component heatmap of delta_loss
    heatmap_delta_metric.png  the same for delta NDCG@k
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geomlens.ablation.api import ablate_tokens
from geomlens.ablation.config import AblateConfig
from geomlens.ablation.result import AblationResult
from geomlens.data.source import load_model_segments
from geomlens.device import resolve_device
from geomlens.models import load_model
from geomlens.models.inputs import check_model_inputs
from geomlens.runner.command import Command
from geomlens.runner.record_log import RECORDS_DIR
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def run_ablation(cfg: AblateConfig, run_dir: Path, *, model: HookedTransformer | None = None) -> dict:
    """Run the ablations of ``cfg`` and write their outputs into ``run_dir``.

    ``model`` (optional) is used instead of loading ``cfg.model``; it needs a tokenizer. Under
    torchrun the batches are split over the ranks (`geomlens.runner.sharding`) and rank 0
    writes the run directory. Rank 0 keeps every batch's record in ``run_dir/records`` (a
    resumed run reads them back; the lifecycle deletes them once the run is done).
    """
    ranks = Ranks.start(resolve_device(cfg.device))
    with ranks.together():
        result = _measure(cfg, model, ranks, Path(run_dir) / RECORDS_DIR)
    if not ranks.is_main:
        return {}
    return result.save(run_dir)


def _measure(cfg: AblateConfig, model: HookedTransformer | None, ranks: Ranks,
             records: Path) -> AblationResult:
    """The `AblationResult` of ``cfg``, on every rank."""
    if model is None:
        model = load_model(cfg.model, device=ranks.device)
    seqs, _, _ = load_model_segments(cfg, model)
    return ablate_tokens(model, seqs, cfg, ranks=ranks, records=records)


def validate_ablation(cfg: AblateConfig) -> None:
    """Model name, text, lengths and layers, checked before a run directory exists."""
    check_model_inputs(cfg, layers=cfg.layers)


def headline(summary: dict, run_dir: Path) -> str:
    return (f"ablate: {summary['n_conditions']} conditions; clean loss {summary['clean_loss']:.4f}, "
            f"clean {summary['metric']} {summary['clean_metric']:.4f}; table: {run_dir / 'ablation.csv'}")


COMMANDS = (Command(
    "ablate", AblateConfig, run_ablation, validate=validate_ablation, headline=headline,
    resumable=True, keeps_records=True,
    help="zero/mean/resample ablation of attention/MLP outputs: delta loss and delta NDCG@k"),)
