"""`geomlens run CONFIG [KEY=VALUE ...]`: run every point of an experiment YAML (see experiments/README.md)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML, e.g. experiments/configs/table61_smollm2.yaml")
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


def run(args: argparse.Namespace) -> int:
    from geomlens.runner.runner import Runner, select
    from geomlens.runner.spec import load_experiment
    from geomlens.rundir import to_jsonable

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
