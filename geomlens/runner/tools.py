"""The runner's tools: `geomlens run CONFIG [KEY=VALUE ...]` (every point of an experiment YAML,
see experiments/README.md) and `geomlens report DIR...` (summary.json files across seeds in one
table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geomlens.errors import InputError
from geomlens.rundir import atomic_write, to_jsonable
from geomlens.runner.command import Tool
from geomlens.runner.report import (
    TABLE_SUFFIXES,
    aggregate,
    check_output_file,
    collect_runs,
    format_table,
    markdown_table,
    save_table,
)
from geomlens.runner.runner import Runner, select
from geomlens.runner.spec import load_experiment


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML, e.g. experiments/configs/table61_smollm2.yaml, "
                        "or the name of a shipped config (table61_smollm2)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="overrides such as seed=1 model.name=gemma3-270m out=runs/x sweep.seed=[0,1] "
        "(a key that is not top-level means config.KEY; values are YAML)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list points, status and configs; run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="points run in parallel, one process each")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--point", default=None, help="run only the point with this name")
    which.add_argument("--index", type=int, default=None, help="run only the point at this grid index (e.g. $SLURM_ARRAY_TASK_ID)")


def run_experiment(args: argparse.Namespace) -> int:
    spec = load_experiment(args.config, args.overrides)
    runner = Runner(spec)
    if args.dry_run:
        planned = select(runner.plan(), name=args.point, index=args.index)
        print(f"{spec.path}: experiment {spec.experiment}, {len(planned)} point(s), out {spec.out}")
        for p in planned:
            extra = f"  (differs in {', '.join(p.differences)})" if p.differences else ""
            print(f"[{p.point.index}] {p.point.name}  {p.status}  {p.run_dir}{extra}")
        for p in planned:
            print(f"\n# {p.point.name}")
            print(json.dumps(to_jsonable(p.config), indent=2, sort_keys=True))
        return 0
    results = runner.run(jobs=args.jobs, point=args.point, index=args.index)
    for r in results:
        print(f"{r.status:8s} {r.name}  {r.run_dir}" + (f"  {r.error}" if r.error else ""))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"{len(failed)} of {len(results)} point(s) failed; rerun the same command to retry them.")
        return 1
    return 0



def add_report_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_report(args: argparse.Namespace) -> int:
    if args.n_boot < 1 or not 0 < args.confidence < 1 or not 0 <= args.digits <= 15:
        raise InputError(f"--n-boot must be >= 1 (got {args.n_boot}), --confidence in (0, 1) "
                         f"(got {args.confidence}), --digits in 0..15 (got {args.digits})")
    for flag, path, suffixes in (("--out", args.out, TABLE_SUFFIXES), ("--runs", args.runs, TABLE_SUFFIXES),
                                 ("--markdown", args.markdown, None)):
        if path is not None:
            check_output_file(path, flag, suffixes)
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
        atomic_write(args.markdown, text)
    return 0


COMMANDS = (
    Tool("run", add_run_arguments, run_experiment,
         help="run an experiment config (YAML) and its sweep; finished points are skipped"),
    Tool("report", add_report_arguments, run_report,
         help="one table (mean ± std over seeds, or CIs) from many run directories"),
)
