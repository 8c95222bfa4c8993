"""The main job's ``geomlens analyze`` with the native code on and off (``GEOMLENS_NATIVE=0``).

Runs the command of ``scripts/main.sh`` (smollm2-135m, bundled corpus, its flags: 1,023
permutations, calibrated JSD, layer lens, Spearman, controls; the defaults otherwise) as a
subprocess, exactly as a user does, once per path as a warm-up and then ``--repeats`` times,
the two paths interleaved (native, torch, native, torch, ...), with the torch threads pinned
(``OMP_NUM_THREADS``). Every run writes a fresh run directory under a temporary folder.

    wall_s        = wall time of ``python -m geomlens analyze ...`` (process start to exit)
    gain          = 1 - min(native) / min(torch): the fraction of the torch path's time that
                    the native code saves (the issue's rule: < 0.15 deletes the native code)
    same_summary  = the runs' summary.json files are bitwise identical across the paths (after
                    dropping the fields that name the run: run dir, timing, environment)

    flock /tmp/geomlens-heavy.lock python benchmarks/bench_native.py [--repeats 3] [--threads 2]
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


def run_once(path: str, out: Path, threads: int) -> float:
    env = {**os.environ, "GEOMLENS_NATIVE": PATHS[path], "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geomlens", "analyze", *MAIN_FLAGS, "--out", str(out)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


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
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "native.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {p: [] for p in PATHS}
    summaries: dict[str, set[str]] = {p: set() for p in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):  # round 0: the warm-up (caches, compiled code)
            for path in PATHS:
                out = Path(tmp) / f"{path}-{i}"
                seconds = run_once(path, out, args.threads)
                summaries[path].add(summary_of(out))
                if i:
                    runs[path].append(seconds)
                print(f"{'warm-up' if not i else f'repeat {i}'} {path} {seconds:.1f}s", flush=True)
    times = {p: {"min": min(ts), "median": statistics.median(ts), "max": max(ts), "all": ts}
             for p, ts in runs.items()}
    gain = 1 - times["native"]["min"] / times["torch"]["min"]
    res = {
        "command": "geomlens analyze " + " ".join(MAIN_FLAGS), "threads": args.threads,
        "repeats": args.repeats, "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "wall_s": times, "gain": gain,
        "spread": {p: t["max"] / t["min"] for p, t in times.items()},
        "same_summary": len(summaries["native"] | summaries["torch"]) == 1,
        "definition": "wall_s = wall time of the main job's geomlens analyze (subprocess); "
                      "gain = 1 - min(native) / min(torch)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"threads {args.threads}; load avg {load_before[0]:.2f} -> {res['load_avg_after'][0]:.2f}")
    for p, t in times.items():
        print(f"{p} {t['min']:.1f}s  (median {t['median']:.1f}, max {t['max']:.1f}; "
              f"spread {t['max'] / t['min']:.2f}x)")
    print(f"gain {gain:.3f}  same_summary {res['same_summary']}")


if __name__ == "__main__":
    main()
