"""The main job's ``geomlens analyze`` with the native code on and off (``GEOMLENS_NATIVE=0``).

Runs the command of ``scripts/main.sh`` (smollm2-135m, bundled corpus, its flags: 1,023
permutations, calibrated JSD, layer lens, Spearman, controls; the defaults otherwise) as a
subprocess, exactly as a user does, once per path as a warm-up and then ``--repeats`` times,
the two paths interleaved (native, torch, native, torch, ...), with the torch threads pinned
(``OMP_NUM_THREADS``). Every run writes a fresh run directory under a temporary folder.

``--tree NAME=DIR`` (repeatable) times the code of other source trees (e.g. an export of an
earlier commit) in the same interleaved rounds: rows ``NAME/native``, ``NAME/torch``. Each tree
gets its own ``GEOMLENS_CACHE`` under ``--cache-root`` (its native builds apart), whose
``models`` and ``tokens`` link to the default cache's.

    wall_s        = wall time of ``python -m geomlens analyze ...`` (process start to exit)
    gain          = 1 - min(native) / min(torch) per tree: the fraction of the torch path's
                    time that the native code saves (the rule: < 0.15 deletes the native code)
    same_summary  = the runs' summary.json files are bitwise identical across the paths (after
                    dropping the fields that name the run: run dir, timing, environment)

    flock /tmp/geomlens-heavy.lock python benchmarks/bench_native.py [--repeats 3] [--threads 2]
        [--tree before=/tmp/old-checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN_FLAGS = ["--model", "smollm2-135m", "--n-segments", "4", "--max-tokens", "64",
              "--trajectory-segments", "1", "--layer-lens-positions", "64"]
"""The flags of scripts/main.sh."""
PATHS = {"native": "1", "torch": "0"}
"""Path name -> GEOMLENS_NATIVE."""


def run_once(tree: Path, cache: Path, native: str, out: Path, threads: int) -> float:
    env = {**os.environ, "GEOMLENS_NATIVE": native, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(tree), "GEOMLENS_CACHE": str(cache)}
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "geomlens", "analyze", *MAIN_FLAGS, "--out",
                          str(out)], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if run.returncode:
        raise SystemExit(f"{tree} GEOMLENS_NATIVE={native} failed:\n{run.stderr[-3000:]}")
    return seconds


def tree_cache(root: Path, name: str) -> Path:
    """``root/name`` with ``models`` and ``tokens`` linked to the default cache's."""
    default = Path(os.environ.get("GEOMLENS_CACHE") or Path.home() / ".cache" / "geomlens")
    cache = root / name
    cache.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "tokens"):
        if not (cache / sub).exists():
            (cache / sub).symlink_to(default / sub)
    return cache


def summary_of(run_dir: Path) -> str:
    """summary.json without the fields that differ between any two runs (paths, times)."""
    data = json.loads((run_dir / "summary.json").read_text())
    for key in ("run_dir", "elapsed_s", "timing", "environment", "started", "finished"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="also time the source tree DIR (repeatable)")
    ap.add_argument("--cache-root", default=None, help="where the per-tree caches go")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "native.json"))
    args = ap.parse_args()
    trees = {"this": ROOT, **{t.split("=", 1)[0]: Path(t.split("=", 1)[1]) for t in args.tree}}
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {f"{t}/{p}": [] for t in trees for p in PATHS}
    summaries: dict[str, set[str]] = {t: set() for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cache_root or Path(tmp) / "cache")
        caches = {t: tree_cache(root, t) for t in trees}
        for i in range(args.repeats + 1):  # round 0: the warm-up (builds, compiled code)
            for row in runs:
                tree, path = row.split("/")
                out = Path(tmp) / f"{tree}-{path}-{i}"
                seconds = run_once(trees[tree], caches[tree], PATHS[path], out, args.threads)
                summaries[tree].add(summary_of(out))
                if i:
                    runs[row].append(seconds)
                print(f"{'warm-up' if not i else f'repeat {i}'} {row} {seconds:.1f}s", flush=True)
    times = {r: {"min": min(ts), "median": statistics.median(ts), "max": max(ts), "all": ts}
             for r, ts in runs.items()}
    gain = {t: 1 - times[f"{t}/native"]["min"] / times[f"{t}/torch"]["min"] for t in trees}
    res = {
        "command": "geomlens analyze " + " ".join(MAIN_FLAGS), "threads": args.threads,
        "repeats": args.repeats, "trees": {t: str(d) for t, d in trees.items()},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "wall_s": times, "gain": gain,
        "spread": {r: t["max"] / t["min"] for r, t in times.items()},
        "same_summary": {t: len(s) == 1 for t, s in summaries.items()},
        "definition": "wall_s = wall time of the main job's geomlens analyze (subprocess); "
                      "gain = 1 - min(native) / min(torch) of one tree",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"threads {args.threads}; load avg {load_before[0]:.2f} -> {res['load_avg_after'][0]:.2f}")
    for r, t in times.items():
        print(f"{r} {t['min']:.1f}s  (median {t['median']:.1f}, max {t['max']:.1f}; "
              f"spread {t['max'] / t['min']:.2f}x)")
    for t in trees:
        print(f"gain {t} {gain[t]:.3f}  same_summary {res['same_summary'][t]}")


if __name__ == "__main__":
    main()
