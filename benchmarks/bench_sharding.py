"""Does sharding help on this machine's CPU cores? ``geomlens analyze`` in one process with N
threads against ``torchrun --nproc_per_node=N`` with one thread per rank, same config.

    one_process  OMP_NUM_THREADS=N python -m geomlens analyze ...
    sharded      OMP_NUM_THREADS=1 torchrun --nproc_per_node=N -m geomlens analyze ...
    ratio        min wall(one_process) / min wall(sharded)   (> 1: sharding is faster)

Walls are whole commands (interpreter start, model load on every rank, the analysis, the
files), run interleaved --repeats times after one warm-up of each. The sharded run's
summary.json is also compared with a one-process run at one thread (equal: the same numbers,
`tests/unit/runner/test_sharding.py`; at N threads float32 reductions round differently).

    flock /tmp/geomlens-heavy.lock python benchmarks/bench_sharding.py --model gemma3-270m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the thesis-scale Table 6.1 settings (experiments/configs/table61_gemma3_thesis.yaml), fewer
#: segments
ANALYZE = ["--n-permutations", "1023", "--control-positions", "512",
           "--layer-lens-positions", "64", "--no-compile", "--device", "cpu"]


def _run(cmd: list[str], threads: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT),
           "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([*cmd, "--out", str(out)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--n-segments", type=int, default=1, help="segments per domain")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sharding.json"))
    args = ap.parse_args()
    flags = ["analyze", "--model", args.model, "--n-segments", str(args.n_segments),
             "--batch-size", str(args.batch_size), "--max-tokens", str(args.max_tokens), *ANALYZE]
    one = [sys.executable, "-m", "geomlens", *flags]
    sharded = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.ranks}",
               "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m", "geomlens", *flags]
    tmp = Path(tempfile.mkdtemp(prefix="bench_sharding_"))
    load = [os.getloadavg()[0]]
    _run(one, args.ranks, tmp / "warm1")
    _run(sharded, 1, tmp / "warm2")
    walls: dict[str, list[float]] = {"one_process": [], "sharded": []}
    for _ in range(args.repeats):
        walls["one_process"].append(_run(one, args.ranks, tmp / "one"))
        walls["sharded"].append(_run(sharded, 1, tmp / "sharded"))
        load.append(os.getloadavg()[0])
    _run(one, 1, tmp / "one_thread")
    same = (json.loads((tmp / "sharded" / "summary.json").read_text())
            == json.loads((tmp / "one_thread" / "summary.json").read_text()))
    info = json.loads((tmp / "sharded" / "summary.json").read_text())["info"]
    stats = {k: {"min": min(v), "median": statistics.median(v), "max": max(v), "all": v}
             for k, v in walls.items()}
    res = {
        "model": args.model, "ranks": args.ranks, "threads_one_process": args.ranks,
        "n_segments": info["n_segments"], "n_positions": info["n_positions"],
        "batch_size": args.batch_size, "flags": flags, "wall_s": stats,
        "ratio_one_over_sharded": stats["one_process"]["min"] / stats["sharded"]["min"],
        "sharded_summary_equals_one_process_at_one_thread": same,
        "load_average_1min": load, "cpu_count": os.cpu_count(),
        "definition": __doc__.split("\n\n")[1],
    }
    Path(args.out).write_text(json.dumps(res, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: res[k] for k in ("n_positions", "ratio_one_over_sharded",
                                          "sharded_summary_equals_one_process_at_one_thread")}))
    print({k: round(v["min"], 1) for k, v in stats.items()}, "load", load)


if __name__ == "__main__":
    main()
