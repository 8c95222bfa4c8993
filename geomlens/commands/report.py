"""`geomlens report DIR...`: aggregate summary.json files across seeds into a table."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="run directories or sweep roots (searched recursively)")
    parser.add_argument("--out", default=None, help="save the numeric table as .csv or .parquet")
    parser.add_argument("--markdown", default=None, help="save the formatted table as Markdown")
    parser.add_argument("--runs", default=None, help="also save the per-run table (.csv or .parquet)")
    parser.add_argument(
        "--group-by", nargs="*", default=None,
        help="config keys to group by (default: the keys that vary, except seed; none = one group)",
    )
    parser.add_argument("--explode", default=None, metavar="KEY", help="one row per record of the summary's list KEY (e.g. 'results' of geomlens analyze)")
    parser.add_argument("--metrics", nargs="+", default=None, help="summary keys (dotted) to report; default: all numeric")
    parser.add_argument("--interval", choices=["std", "bootstrap"], default="std", help="mean ± std, or a bootstrap CI of the mean")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--confidence", type=float, default=0.95, help="bootstrap CI level")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the Markdown table")


def run(args: argparse.Namespace) -> int:
    from geomlens.runner.report import (
        aggregate,
        collect_runs,
        format_table,
        markdown_table,
        save_table,
    )

    runs = collect_runs(args.dirs, explode=args.explode)
    table = aggregate(
        runs, group_by=args.group_by, metrics=args.metrics, interval=args.interval,
        n_boot=args.n_boot, confidence=args.confidence,
    )
    text = markdown_table(format_table(table, digits=args.digits))
    print(text, end="")
    if args.out:
        save_table(table, args.out)
    if args.runs:
        save_table(runs, args.runs)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    return 0
