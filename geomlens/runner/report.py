"""Collect run summaries into one table and aggregate them across seeds.

    runs = collect_runs(["runs/table61"])         # one row per run: config.* columns + metrics
    table = aggregate(runs)                        # mean, std, n per group of varying config keys
    print(markdown_table(format_table(table)))

Every directory holding a ``summary.json`` below the given paths is one run. Nested summary
dicts become dotted columns (``ndcg.k10``); the run's ``config.json`` fields join as
``config.<key>`` columns. Runs are grouped by the config keys that vary across runs, except
``seed`` (or by explicit keys), and every numeric metric gets its mean, its sample standard
deviation (ddof=1; NaN for a single run) and its count, or a percentile bootstrap confidence
interval of the mean.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from geomlens.errors import InputError
from geomlens.rundir import DONE, FAILED, atomic_write, check_out_path, failure

logger = logging.getLogger(__name__)

CONFIG_PREFIX = "config."
RUN_DIR = "run_dir"
SEED_KEYS = ("seed",)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict with dotted keys (lists are kept as values)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def find_runs(dirs: list[str | Path]) -> list[Path]:
    """Directories holding a ``summary.json`` under ``dirs`` (recursively), sorted."""
    found: set[Path] = set()
    for d in map(Path, dirs):
        if not d.exists():
            raise InputError(f"{d} does not exist.")
        if not d.is_dir():
            raise InputError(f"{d} is not a directory; give run directories or sweep roots.")
        if (d / "summary.json").exists():
            found.add(d)
        found.update(p.parent for p in d.rglob("summary.json"))
    return sorted(found)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_run(run_dir: Path) -> tuple[Any, dict] | str:
    """(summary, config) of a finished run, or why it is skipped."""
    if (run_dir / FAILED).exists():
        return f"marked failed ({failure(run_dir)})"
    if not (run_dir / DONE).exists() and (run_dir / "env.json").exists():
        return "unfinished (no 'done' marker)"
    try:
        summary = _read_json(run_dir / "summary.json")
        config_path = run_dir / "config.json"
        config = _read_json(config_path) if config_path.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
    if not isinstance(config, dict):
        return "config.json is not a JSON object"
    return summary, config


def collect_runs(dirs: list[str | Path], *, explode: str | None = None) -> pd.DataFrame:
    """One row per run: ``run_dir``, ``config.*`` columns (from config.json) and summary columns.

    Runs marked ``failed``, unfinished ones (env.json but no ``done``) and ones whose JSON
    cannot be read are left out, each named in one warning line.

    With ``explode="results"``, a summary whose ``results`` is a list of records (e.g. one per
    (hidden, target, score) in `geomlens analyze`) gives one row per record instead; the
    record's fields become the columns and the rest of the summary is dropped.
    """
    rows = []
    for run_dir in find_runs(dirs):
        read = _read_run(run_dir)
        if isinstance(read, str):
            logger.warning("skipping %s: %s", run_dir, read)
            continue
        summary, config = read
        base: dict[str, Any] = {RUN_DIR: str(run_dir)}
        base.update({CONFIG_PREFIX + k: _hashable(v) for k, v in flatten(config).items()})
        if explode is not None:
            records = summary.get(explode) if isinstance(summary, dict) else None
            if not isinstance(records, list):
                raise InputError(f"{run_dir / 'summary.json'} has no list {explode!r} to explode.")
            rows.extend({**base, **flatten(rec)} for rec in records)
            continue
        base.update(flatten(summary if isinstance(summary, dict) else {"value": summary}))
        rows.append(base)
    if not rows:
        raise InputError(f"No summary.json of a finished run found under {', '.join(map(str, dirs))}.")
    return pd.DataFrame(rows)


def _config_column(df: pd.DataFrame, key: str) -> str:
    for name in (key, CONFIG_PREFIX + key):
        if name in df.columns:
            return name
    raise InputError(f"Unknown --group-by key {key!r}; config keys: {', '.join(config_keys(df))}")


def config_keys(df: pd.DataFrame) -> list[str]:
    return [c[len(CONFIG_PREFIX):] for c in df.columns if c.startswith(CONFIG_PREFIX)]


def varying_keys(df: pd.DataFrame, *, exclude: tuple[str, ...] = SEED_KEYS) -> list[str]:
    """Config keys with more than one distinct value across runs (``seed`` excluded)."""
    out = []
    for key in config_keys(df):
        if key in exclude:
            continue
        if df[CONFIG_PREFIX + key].map(_hashable).nunique(dropna=False) > 1:
            out.append(key)
    return out


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric (non-bool) summary columns, except a copy of the seed."""
    out = []
    for col in df.columns:
        if col == RUN_DIR or col.startswith(CONFIG_PREFIX) or col in SEED_KEYS:
            continue
        series = df[col]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            continue
        out.append(col)
    return out


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaN for fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def aggregate(
    df: pd.DataFrame,
    *,
    group_by: list[str] | None = None,
    metrics: list[str] | None = None,
    interval: Literal["std", "bootstrap"] = "std",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean ± std (and n) of each metric per group of config keys.

    Args:
        df: Output of `collect_runs`.
        group_by: Config keys to group by (default: the keys that vary, except ``seed``).
        metrics: Summary columns to aggregate (default: every numeric one).
        interval: ``"std"`` adds ``<metric>.std``; ``"bootstrap"`` also adds ``<metric>.ci_low``
            and ``<metric>.ci_high`` (percentile bootstrap of the mean).
        n_boot, confidence, seed: Bootstrap settings.

    Returns:
        One row per group: the group keys (plain names), ``n`` (runs), then per metric
        ``<metric>.mean``, ``<metric>.std`` (ddof=1), ``<metric>.n`` (non-missing values).
    """
    keys = varying_keys(df) if group_by is None else list(group_by)
    columns = [_config_column(df, k) for k in keys]
    names = [c[len(CONFIG_PREFIX):] if c.startswith(CONFIG_PREFIX) else c for c in columns]
    if metrics is None:
        metrics = metric_columns(df)
    for m in metrics:
        if m not in df.columns and f"{m}.mean" not in df.columns:
            raise InputError(f"Unknown metric {m!r}; available: {', '.join(metric_columns(df))}")
    rows = []
    groups = df.groupby(columns, sort=True, dropna=False) if columns else [((), df)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(names, key))
        row["n"] = len(sub)
        for m in metrics:
            if m not in df.columns:  # pre-aggregated: the run stored m.mean (and m.ci_low/high)
                _within_run(row, sub, m)
                continue
            values = pd.to_numeric(sub[m], errors="coerce").to_numpy(dtype=float)
            present = values[~np.isnan(values)]
            row[f"{m}.mean"] = float(present.mean()) if len(present) else math.nan
            row[f"{m}.std"] = float(present.std(ddof=1)) if len(present) > 1 else math.nan
            row[f"{m}.n"] = len(present)
            if interval == "bootstrap":
                low, high = bootstrap_ci(present, n_boot=n_boot, confidence=confidence, seed=seed)
                row[f"{m}.ci_low"], row[f"{m}.ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


def _within_run(row: dict[str, Any], sub: pd.DataFrame, m: str) -> None:
    """A metric a single run already summarised (``m.mean`` + its own ``m.ci_low/ci_high``, e.g.
    a bootstrap over segments): one run -> its value and CI; several runs -> mean ± std of the
    runs' means."""
    means = pd.to_numeric(sub[f"{m}.mean"], errors="coerce").to_numpy(dtype=float)
    row[f"{m}.mean"] = float(np.nanmean(means)) if len(means) else math.nan
    row[f"{m}.std"] = float(np.nanstd(means, ddof=1)) if len(means) > 1 else math.nan
    row[f"{m}.n"] = int((~np.isnan(means)).sum())
    if len(sub) == 1 and f"{m}.ci_low" in sub.columns:
        row[f"{m}.ci_low"] = float(sub[f"{m}.ci_low"].iloc[0])
        row[f"{m}.ci_high"] = float(sub[f"{m}.ci_high"].iloc[0])


def _fmt(x: Any, digits: int) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def format_table(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Human-readable cells: ``mean ± std`` (or ``mean [low, high]``) per metric, plus ``n``."""
    metrics = [c[: -len(".mean")] for c in table.columns if c.endswith(".mean")]
    derived = {f"{m}.{s}" for m in metrics for s in ("mean", "std", "n", "ci_low", "ci_high")}
    out = table[[c for c in table.columns if c not in derived]].copy()
    for m in metrics:
        cells = []
        for _, row in table.iterrows():
            text = _fmt(row[f"{m}.mean"], digits)
            if f"{m}.ci_low" in table.columns and not pd.isna(row[f"{m}.ci_low"]):
                text += f" [{_fmt(row[f'{m}.ci_low'], digits)}, {_fmt(row[f'{m}.ci_high'], digits)}]"
            elif not math.isnan(row[f"{m}.std"]):
                text += f" ± {_fmt(row[f'{m}.std'], digits)}"
            if "n" in table.columns and row[f"{m}.n"] != row["n"]:
                text += f" (n={int(row[f'{m}.n'])})"
            cells.append(text)
        out[m] = cells
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (numbers right-aligned; ``|`` in cells escaped)."""

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = [cell(c) for c in df.columns]
    body = [[cell(x) for x in row] for row in df.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    widths = [max([len(h), 3, *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric)]
    return "\n".join([line(header), "| " + " | ".join(rule) + " |", *(line(r) for r in body)]) + "\n"


TABLE_SUFFIXES = (".csv", ".parquet")


def check_output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """An output file path that can be written: not a directory, under a writable directory,
    with one of ``suffixes``; checked before any work."""
    path = Path(path)
    if suffixes is not None and path.suffix not in suffixes:
        raise InputError(f"{flag} must end in {' or '.join(suffixes)}, got {path.name!r}.")
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory; give a file name.")
    check_out_path(path.parent if str(path.parent) else ".", flag=flag)
    return path


def save_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``.csv`` or ``.parquet`` (by suffix), atomically."""
    path = check_output_file(path, "--out", TABLE_SUFFIXES)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        atomic_write(path, table.to_csv(index=False))
    else:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
