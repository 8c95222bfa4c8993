"""`geomlens analyze`: how well does distance to the token embeddings rank the vocabulary like
the LM head's next-token distribution? (thesis Table 6.1). Flags: `AnalyzeConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "analyze"
COLUMNS = (("ndcg@full", "ndcg@full"), ("ndcg@10", "ndcg@10"), ("top1", "top-1"), ("jsd", "JSD"),
           ("jsd_calibrated", "JSD cal."))
BEST_OF_FAMILY = ("jsd", "jsd_calibrated")
"""Metrics that differ within a rank group: the headline shows the family's smallest."""
UNIFORM = "uniform"


def headline(summary: dict, run_dir: Path) -> str:
    """A few rows: per hidden state, the distance family (its scores share one ranking; the JSD
    shown is the family's smallest), cosine and dot, against the first target; the full table
    is in ``table61.md``; the uniform reference (JSD(p || uniform)) closes the table."""
    results = [r for r in summary["results"] if r["score"] != UNIFORM]
    uniform = [r for r in summary["results"] if r["score"] == UNIFORM]
    if not results:
        return f"no results; see {run_dir}"
    target = results[0]["target"]
    alias = summary["info"].get("target_alias", {})
    same = [t for t, real in alias.items() if t != target and real == alias.get(target, target)]
    families = _families([r["score"] for r in results])
    rows = [_row(hidden, family, [r for r in results if r["hidden"] == hidden
                                  and r["target"] == target and _family(r["score"]) == family])
            for hidden in dict.fromkeys(r["hidden"] for r in results) for family in families]
    rows += [_row("-", UNIFORM, uniform)] if uniform else []
    header = ["hidden", "score", *(label for _, label in COLUMNS), "perm p"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    note = f" (= {', '.join(same)}: same numbers)" if same else ""
    n_perm = next((r["controls"].get("n_permutations", 0) for r in results if r.get("controls")), 0)
    bound = summary["info"]["ndcg_full_error_bound_max"]
    lines = [f"target {target}{note}; means over {results[0]['n_segments']} segments; "
             f"perm p: NDCG@full, {n_perm} permutations", fmt(header),
             *(fmt(row) for row in rows), *_calibration_note(summary["results"]),
             f"NDCG@full max error bound: {bound:.2e}; full table: {run_dir / 'table61.md'}"]
    return "\n".join(lines)


def _calibration_note(results: list[dict]) -> list[str]:
    counts = next((r["calibration"] for r in results if r.get("calibration")), None)
    if counts is None:
        return []
    if "skipped" in counts:
        return [f"JSD cal.: not computed ({counts['skipped']})"]
    return [f"JSD cal.: one temperature per score fitted on {counts['n_fit_positions']} positions "
            f"of {counts['n_fit_segments']} segments, JSD on {counts['n_eval_positions']} positions "
            f"of the {counts['n_eval_segments']} other segments"]


def _families(scores: list[str]) -> list[str]:
    """The rank groups of ``scores`` in the order of the score registry (distance first)."""
    from geomlens.geometry.scores import SCORES

    present = {_family(s) for s in scores}
    return [f for f in dict.fromkeys(_family(n) for n in SCORES.names()) if f in present]


def _family(score: str) -> str:
    from geomlens.geometry.scores import get_score

    return get_score(score).rank_group or score


def _row(hidden: str, family: str, entries: list[dict]) -> list[str]:
    first = entries[0]
    label = family if len(entries) == 1 else f"{family} ({len(entries)} scores)"
    cells = []
    for metric, _ in COLUMNS:
        if metric not in first["overall"]:
            cells.append("-")
        elif metric in BEST_OF_FAMILY and len(entries) > 1:
            best = min(entries, key=lambda e: e["overall"][metric]["mean"])
            cells.append(f"{best['overall'][metric]['mean']:.3f} ({best['score']})")
        else:
            cells.append(f"{first['overall'][metric]['mean']:.3f}")
    perm = first.get("controls", {}).get("permutation", {}).get("ndcg@full")
    cells.append("-" if perm is None else f"{perm['p_value']:.2g}")
    return [hidden, label, *cells]
