"""The ``analyze`` command: corpus -> tokens -> `analyze_tokens` -> files in a run dir.

Outputs: per_token.parquet, per_segment.csv, controls.csv, per_layer.csv (+ per_layer_domain.csv)
when trajectories are on, layers.csv + figures/layers.png when the layer lens is on
(`geomlens.analysis.layers`), calibration_per_segment.csv (the calibrated JSD per evaluation
segment, `geomlens.analysis.calibration`) when calibration is on, figures/*.png, table61.md, and
the returned summary (summary.json). While it runs, records/ holds every folded batch's record,
which a resumed run reads back (`geomlens.runner.record_log`); it is deleted once the run is
done unless ``--keep-records``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from geomlens.analysis.agreement import rank_groups
from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.headline import format_table, headline_rows, headline_score
from geomlens.analysis.pipeline import analyze_tokens
from geomlens.data.source import load_model_segments
from geomlens.device import resolve_device
from geomlens.models import load_model
from geomlens.models.inputs import check_model_inputs
from geomlens.runner.command import Command
from geomlens.runner.record_log import RECORDS_DIR
from geomlens.runner.sharding import Ranks

logger = logging.getLogger(__name__)


def run_analysis(cfg: AnalyzeConfig, run_dir: Path) -> dict[str, Any]:
    """Run the whole analysis for ``cfg`` and write its outputs into ``run_dir`` (through
    `AnalysisResult.save`, the same code a notebook's ``result.save(run_dir)`` runs).

    Under torchrun every rank loads the model on its own device and analyzes its share of the
    batches; rank 0 folds them and writes the run directory (`geomlens.runner.sharding`).

    Rank 0 keeps each folded batch's record in ``run_dir/records``
    (`geomlens.runner.record_log`): a resumed run (``--resume``, or `geomlens run` on an
    unfinished point) folds those and computes only the rest. The lifecycle deletes the folder
    once the run is done (kept with ``--keep-records``)."""
    run_dir = Path(run_dir)
    ranks = Ranks.start(resolve_device(cfg.device))
    with ranks.together():
        model = load_model(cfg.model, device=ranks.device)
        seqs, ids, domains = load_model_segments(cfg, model)
    if ranks.is_main:
        logger.info("analyze: %d segments, %d tokens, %d rank(s)", len(seqs),
                    sum(len(s) for s in seqs), ranks.info.world_size)
    result = analyze_tokens(model, seqs, cfg, segment_ids=ids, domains=domains,
                            per_token_path=run_dir / "per_token.parquet", ranks=ranks,
                            records=run_dir / RECORDS_DIR)
    return result.save(run_dir) if result is not None else {}


def validate_analysis(cfg: AnalyzeConfig) -> None:
    """Model name, text file and lengths, checked before a run directory exists."""
    check_model_inputs(cfg)


def headline(summary: dict, run_dir: Path) -> str:
    """The Table 6.1 headline of this run (`geomlens.analysis.headline`: the distance score per
    hidden state and distinct target, mean [95% CI]) with the notes a reader needs; the full
    grid is in ``table61.md``."""
    results = [r for r in summary["results"] if r["score"] != "uniform"]
    if not results:
        return f"no results; see {run_dir}"
    score = headline_score(summary)
    hiddens = list(dict.fromkeys(r["hidden"] for r in results))
    rows = headline_rows([summary], hiddens=hiddens, score=score)
    group = rank_groups(list(dict.fromkeys(r["score"] for r in results)))
    same = [s for s, g in group.items() if g == group[score] and s != score]
    n_perm = next((r["controls"].get("n_permutations", 0) for r in results if r.get("controls")), 0)
    lines = [f"score {score}" + (f" (= {', '.join(same)} in every rank metric)" if same else "")
             + f"; h = {', '.join(hiddens)}; means over {results[0]['n_segments']} segments "
             f"[95% CI]; perm p: NDCG@full, {n_perm} permutations",
             format_table(rows, with_hidden=True), *_notes(summary, run_dir)]
    others = [s for s in dict.fromkeys(r["score"] for r in results) if s != score and s not in same]
    if others:
        lines.insert(-1, f"other scores (full table): {', '.join(others)}")
    return "\n".join(lines)


def _notes(summary: dict, run_dir: Path) -> list[str]:
    """The uniform reference, how the JSD was calibrated, the NDCG@full bound, the files."""
    results = summary["results"]
    notes = [f"JSD(p || uniform) = {r['overall']['jsd']['mean']:.3f} (the reference a flat q "
             "scores)" for r in results if r["score"] == "uniform"]
    counts = next((r["calibration"] for r in results if r.get("calibration")), None)
    if counts is not None and "skipped" in counts:
        notes.append(f"JSD calibrated: not computed ({counts['skipped']})")
    elif counts is not None:
        notes.append(f"JSD calibrated: one temperature per score fitted on "
                     f"{counts['n_fit_positions']} positions of {counts['n_fit_segments']} "
                     f"segments, JSD on {counts['n_eval_positions']} positions of the "
                     f"{counts['n_eval_segments']} other segments")
    bound = summary["info"]["ndcg_full_error_bound_max"]
    notes.append(f"NDCG@full max error bound {bound:.2e}; full table: {run_dir / 'table61.md'}"
                 + ("; layer lens: " + str(run_dir / "layers.csv") if "layers" in summary else ""))
    return notes


COMMANDS = (Command(
    "analyze", AnalyzeConfig, run_analysis, validate=validate_analysis, headline=headline,
    resumable=True, keeps_records=True, help="distance vs probability (Table 6.1): NDCG@k, JSD, Spearman, top-k; bootstrap CIs, controls"),)
