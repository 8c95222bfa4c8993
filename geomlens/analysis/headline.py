"""The Table 6.1 headline: a few rows a reader takes in at a glance.

One row per (model, hidden state, distinct target) of **the distance score** ``neg_dist``
(s = −‖h − e_v‖). Its rank group (``neg_dist``, ``inv_dist``, ``neg_sq_dist``,
``softmax_inv_dist``: monotone in d, so every rank metric is identical) shares the row; only
the JSDs differ between them, and the row shows ``neg_dist``'s. A target whose matrix is
bitwise equal to another's (W_U = W_Eᵀ in a tied model) is folded into that target's row.

Columns (each a mean over segments [95% bootstrap CI over segments], as in summary.json):
NDCG@full, NDCG@10, top-1, the raw JSD(p ‖ softmax(s)), the temperature-calibrated JSD
(`jsd_calibrated`, when the run has it) and the permutation test's p-value of NDCG@full.

Several runs of one model (seeds) are combined into one row by `combine_seeds`: the mean of
the seeds' means with a 95% Student-t interval over the seed means (what varies between
training runs; its lower end clipped at 0, where every headline metric is bounded), and the
largest permutation p-value.

    rows = headline_rows([json.load(open("runs/x/summary.json"))])
    print(format_table(rows))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from geomlens.errors import InputError

SCORE = "neg_dist"
"""The score the headline shows (its rank group shares every rank metric)."""
METRICS: tuple[tuple[str, str], ...] = (
    ("ndcg@full", "NDCG@full"), ("ndcg@10", "NDCG@10"), ("top1", "top-1"),
    ("jsd", "JSD raw"), ("jsd_calibrated", "JSD calibrated"),
)
"""(summary.json metric, column label) in column order."""


def _targets(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Distinct targets with the requested names each stands for (its aliases)."""
    alias = summary["info"].get("target_alias", {})
    names = list(dict.fromkeys(r["target"] for r in summary["results"] if r.get("target")))
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(alias.get(name, name), []).append(name)
    return [(real, same) for real, same in out.items() if real in names]


def _perm_p(record: dict[str, Any]) -> float | None:
    perm = (record.get("controls") or {}).get("permutation", {}).get("ndcg@full")
    return None if perm is None else float(perm["p_value"])


def headline_rows(
    summaries: Iterable[dict[str, Any]], *, hiddens: Sequence[str] = ("ln_final",),
    score: str = SCORE,
) -> list[dict[str, Any]]:
    """One row per (summary, hidden in ``hiddens``, distinct target) for ``score``: model,
    tied, hidden, target (aliases joined with "="), one {mean, ci_low, ci_high} per metric
    (None when the run lacks it), perm_p, n_segments."""
    rows = []
    for summary in summaries:
        model = summary["model"]
        score = headline_score(summary, score)
        for hidden in hiddens:
            for target, same in _targets(summary):
                rec = next((r for r in summary["results"] if r.get("hidden") == hidden
                            and r.get("target") == target and r.get("score") == score), None)
                if rec is None:
                    continue
                rows.append({
                    "model": model.get("label") or model["name"],
                    "tied": bool(summary.get("tied_embeddings")), "hidden": hidden,
                    "target": " = ".join(same), "n_segments": rec["n_segments"],
                    **{m: rec["overall"].get(m) for m, _ in METRICS}, "perm_p": _perm_p(rec),
                })
    return rows


def headline_score(summary: dict[str, Any], preferred: str = SCORE) -> str:
    """``preferred`` when the run scored it, else the run's first score (uniform aside)."""
    scores = [r["score"] for r in summary["results"] if r.get("score") != "uniform"]
    return preferred if preferred in scores or not scores else scores[0]


def combine_seeds(rows: Sequence[dict[str, Any]], model: str) -> dict[str, Any]:
    """One row from ``rows`` of several seeds of one model (same hidden and target): mean of
    the seed means, 95% t-interval over them (a single row is returned as it is)."""
    if len(rows) == 1:
        return {**rows[0], "model": model}
    from scipy import stats

    out = {**rows[0], "model": model, "n_seeds": len(rows)}
    t = float(stats.t.ppf(0.975, len(rows) - 1))
    for m, _ in METRICS:
        means = [r[m]["mean"] for r in rows if r.get(m) is not None]
        if len(means) != len(rows):
            out[m] = None
            continue
        mu = sum(means) / len(means)
        sd = math.sqrt(sum((x - mu) ** 2 for x in means) / (len(means) - 1))
        half = t * sd / math.sqrt(len(means))
        # every headline metric is >= 0 (NDCG, top-1 in [0, 1]; JSD in [0, ln 2])
        out[m] = {"mean": mu, "ci_low": max(0.0, mu - half), "ci_high": mu + half, "seeds": means}
    ps = [r["perm_p"] for r in rows if r.get("perm_p") is not None]
    out["perm_p"] = max(ps) if ps else None
    return out


def cell(value: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean [ci_low, ci_high]``, or "–" when missing."""
    if value is None:
        return "–"
    return f"{value['mean']:.{digits}f} [{value['ci_low']:.{digits}f}, {value['ci_high']:.{digits}f}]"


def table_cells(row: dict[str, Any], *, with_hidden: bool = False) -> list[str]:
    """The printed cells of one row (model, tied?, [hidden,] target, metrics, perm p, thesis)."""
    p = row.get("perm_p")
    return [row["model"], "yes" if row["tied"] else "no",
            *([row["hidden"]] if with_hidden else []), row["target"],
            *(cell(row.get(m)) for m, _ in METRICS),
            "–" if p is None else f"{p:.2g}", row.get("thesis") or "–"]


def table_header(*, with_hidden: bool = False) -> list[str]:
    return ["model", "tied?", *(["hidden"] if with_hidden else []), "target",
            *(label for _, label in METRICS), "perm p", "thesis"]


def format_table(rows: Sequence[dict[str, Any]], *, markdown: bool = False,
                 with_hidden: bool = False) -> str:
    """The rows as aligned text (the CLI) or a Markdown table (the README)."""
    header = table_header(with_hidden=with_hidden)
    body = [table_cells(r, with_hidden=with_hidden) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
                     for cells in [header, *body])


def load_summary(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A run's summary.json (a run dir, the file itself, or an already loaded dict)."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    path = path / "summary.json" if path.is_dir() else path
    if not path.exists():
        raise InputError(f"{source}: no summary.json (is it a finished analyze run?)")
    return json.loads(path.read_text())


def grouped_rows(groups: Mapping[str, Sequence[str | Path | dict[str, Any]]], *,
                 hiddens: Sequence[str] = ("ln_final",)) -> list[dict[str, Any]]:
    """Headline rows for ``{label: [run dirs or summaries]}``: the runs of one label (seeds of
    one model) are combined per (hidden, target) by `combine_seeds`."""
    rows = []
    for label, sources in groups.items():
        per_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in headline_rows([load_summary(s) for s in sources], hiddens=hiddens):
            per_key.setdefault((row["hidden"], row["target"]), []).append(row)
        rows += [combine_seeds(rs, label) for rs in per_key.values()]
    return rows


def headline_frame(groups: Mapping[str, Sequence[str | Path | dict[str, Any]]], *,
                   hiddens: Sequence[str] = ("ln_final",)) -> pd.DataFrame:
    """`grouped_rows` as a DataFrame of printed cells (notebooks)."""
    rows = grouped_rows(groups, hiddens=hiddens)
    with_hidden = len(hiddens) > 1
    return pd.DataFrame([table_cells(r, with_hidden=with_hidden) for r in rows],
                        columns=table_header(with_hidden=with_hidden))
