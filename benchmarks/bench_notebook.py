"""Notebook-scale analysis time: 5 texts x 32 tokens on smollm2-135m, after the model is loaded.

What is timed (the whole of what ``geomlens.analyze(model, texts=...)`` and showing its headline
does, with every statistic of the default `AnalyzeConfig`: bootstrap CIs over segments, the
permutation test's p, the random-matrix control, calibrated JSD, trajectories and the layer
lens):

    first    the first call in the process (a notebook's first cell after loading the model)
    warm     min of --repeats calls after it (median and max printed too)

each = ``analyze_tokens`` on the 5 token sequences + ``summarize`` (CIs, controls) +
``summarize_layer_lens`` (the layer table's CIs): the calls both the old and the new code have,
so one script times either (``PYTHONPATH=<old checkout> python benchmarks/bench_notebook.py``).
The texts are the first 5 bundled segments, each cut to its first 32 tokens. Threads pinned
(--threads, default 2); the load average is printed before and after.

    flock /tmp/geomlens-heavy.lock python benchmarks/bench_notebook.py [--repeats 3] [--profile out.prof]
    ... bench_notebook.py --without layer_lens,trajectories   # the main table's statistics alone
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import time

import torch

import geomlens
from geomlens.analysis import AnalyzeConfig, analyze_tokens, summarize
from geomlens.analysis.layer_summary import summarize_layer_lens
from geomlens.data.source import load_model_segments


def run_once(model, seqs, cfg, info) -> dict:
    result = analyze_tokens(model, seqs, cfg)
    summary = summarize(result, cfg, model_info=info, n_layers=model.cfg.n_layers)
    if cfg.layer_lens:
        summarize_layer_lens(result.layers, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--profile", help="write a cProfile of the first call to this file")
    ap.add_argument("--without", default="",
                    help="comma-separated views to switch off, of: layer_lens, trajectories "
                         "(what the main table's statistics alone cost)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("code", geomlens.__file__)
    print("loadavg_before", os.getloadavg())
    model = geomlens.load_model("smollm2-135m")
    info = geomlens.model_info(model)
    off = {name: False for name in filter(None, args.without.split(","))}
    if set(off) - {"layer_lens", "trajectories"}:
        ap.error(f"--without takes layer_lens and trajectories, got {args.without!r}")
    cfg = AnalyzeConfig(n_segments=args.texts, max_tokens=args.tokens, **off)
    print("views off", sorted(off) or "none")
    seqs, _, _ = load_model_segments(cfg, model)
    seqs = seqs[: args.texts]
    print("positions", sum(len(s) for s in seqs))
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    first = run_once(model, seqs, cfg, info)
    if prof:
        prof.disable()
        prof.dump_stats(args.profile)
    print(f"first {time.perf_counter() - t0:.2f} s")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        again = run_once(model, seqs, cfg, info)
        times.append(time.perf_counter() - t0)
    assert again["results"] == first["results"]
    print(f"warm_min {min(times):.2f} s  median {statistics.median(times):.2f}  max {max(times):.2f}")
    print("loadavg_after", os.getloadavg())


if __name__ == "__main__":
    main()
