"""`geomlens analyze`: how well does distance to the token embeddings rank the vocabulary like
the LM head's next-token distribution? (thesis Table 6.1). Flags: `AnalyzeConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "analyze"


def headline(summary: dict, run_dir: Path) -> str:
    from geomlens.analysis.summary import table_frame

    frame = table_frame(summary)
    short = [c for c in ("hidden", "target", "score", "ndcg@10", "ndcg@full", "jsd", "top1")
             if c in frame.columns]
    bound = summary["info"]["ndcg_full_error_bound_max"]
    return (frame[short].to_string(index=False)
            + f"\nNDCG@full max error bound: {bound:.2e}; full table: {run_dir / 'table61.md'}")
