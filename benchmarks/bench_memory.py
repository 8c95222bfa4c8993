"""Peak memory of the analysis against the number of segments: it must stay flat.

The default analysis (both hidden states, both targets, all scores, Spearman on its default
sample, controls with the default 999 permutations; trajectories off: their per-layer table is
O(positions) by design, since its medians need every value) runs on 1x, 4x and 16x a base
number of segments, each in a fresh subprocess, which reports its peak resident memory
(``ru_maxrss``) and wall time. Printed as ``peak_rss_mb_<n>x value`` lines plus
``rss_ratio_16x`` (peak at 16x / peak at 1x), written to benchmarks/results/memory.json.

    flock /tmp/geomlens-bench.lock python benchmarks/bench_memory.py [--base 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, torch
from geomlens.analysis import AnalyzeConfig, analyze_tokens
from geomlens.data import load_corpus, tokenize_segments
from geomlens.models import load_model
n_seg, max_tokens, model_name, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
model = load_model(model_name, device="cpu")
texts = load_corpus(n_segments=(n_seg + 4) // 5)["text"]
seqs = tokenize_segments(model.tokenizer, texts, max_tokens=max_tokens)[:n_seg]
rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cfg = AnalyzeConfig(model=model_name, trajectories=False, batch_size=8)
t = time.perf_counter()
res = analyze_tokens(model, seqs, cfg)
print(json.dumps({"segments": len(seqs), "positions": res.info["n_positions"],
                  "wall_s": time.perf_counter() - t, "peak_rss_mb_after_load": rss_model,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--base", type=int, default=16, help="segments at 1x")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs = {}
    for m in args.multiples:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.base * m), str(args.max_tokens),
                              args.model, str(args.threads)], capture_output=True, text=True,
                             check=True)
        runs[f"{m}x"] = json.loads(out.stdout.strip().splitlines()[-1])
        r = runs[f"{m}x"]
        print(f"peak_rss_mb_{m}x {r['peak_rss_mb']:.0f}  ({r['segments']} segments, "
              f"{r['positions']} positions, {r['wall_s']:.1f}s; after model load "
              f"{r['peak_rss_mb_after_load']:.0f} MB)", flush=True)
    first, last = runs[f"{args.multiples[0]}x"], runs[f"{args.multiples[-1]}x"]
    ratio = last["peak_rss_mb"] / first["peak_rss_mb"]
    res = {"model": args.model, "max_tokens": args.max_tokens, "runs": runs,
           "rss_ratio": ratio, "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
           "definition": "peak RSS (ru_maxrss) of a fresh process running analyze_tokens with "
                         "the default AnalyzeConfig (trajectories off) on base x multiple segments"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"rss_ratio_{args.multiples[-1]}x {ratio:.3f}")


if __name__ == "__main__":
    main()
