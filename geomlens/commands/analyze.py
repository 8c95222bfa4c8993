"""`geomlens analyze`: how well does distance to the token embeddings rank the vocabulary like
the LM head's next-token distribution? (thesis Table 6.1). Flags: `AnalyzeConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "analyze"


def headline(summary: dict, run_dir: Path) -> str:
    """The Table 6.1 headline of this run (`geomlens.analysis.headline`: the distance score per
    hidden state and distinct target, mean [95% CI]) with the notes a reader needs; the full
    grid is in ``table61.md``."""
    from geomlens.analysis.headline import format_table, headline_rows, headline_score
    from geomlens.analysis.metrics import rank_groups

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
