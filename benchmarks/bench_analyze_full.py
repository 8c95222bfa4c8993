"""Throughput of the full default ``geomlens analyze`` against a plain forward pass.

The default AnalyzeConfig (both hidden states, both targets, all scores, Spearman on its
default sample, controls with the default permutations, trajectories on every segment) runs on
``--n-segments`` segments per bundled domain at ``--max-tokens`` (the default 128), exactly as
the command reads them (`load_segments`); the baseline is ``model(tokens)`` on the same batches.

    ratio                = time(analyze_tokens + summarize) / time(forward of the same batches)
    positions_per_s      = positions / time(analyze_tokens + summarize)
    ratio_no_trajectories, ratio_table61 = the same without trajectories, and with the settings
                           of experiments/configs/table61_smollm2.yaml (the thesis-scale run)

From the table61 rate it estimates the thesis-scale run (all 5 x 300 bundled segments at 128
tokens): positions counted by tokenizing the corpus, plus the model load measured here. Jobs
run interleaved, --repeats times; minimum, median and maximum are recorded with the load average.

    flock /tmp/geomlens-bench.lock python benchmarks/bench_analyze_full.py [--n-segments 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def summarize_times(ts: list[float]) -> dict:
    return {"min": min(ts), "median": statistics.median(ts), "max": max(ts), "all": ts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-segments", type=int, default=4, help="segments per domain")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "analyze_full.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from geomlens.analysis import AnalyzeConfig, analyze_tokens, summarize
    from geomlens.data.batching import batch_sequences
    from geomlens.data.source import load_segments
    from geomlens.models import load_model

    t = time.perf_counter()
    model = load_model(args.model, device="cpu")
    t_load = time.perf_counter() - t
    base = dict(model=args.model, n_segments=args.n_segments, max_tokens=args.max_tokens,
                n_bootstrap=1000)
    table61 = yaml.safe_load((ROOT / "experiments/configs/table61_smollm2.yaml").read_text())["config"]
    configs = {
        "ratio": AnalyzeConfig(**base),
        "ratio_no_trajectories": AnalyzeConfig(**base, trajectories=False),
        "ratio_table61": AnalyzeConfig.from_dict({**table61, **base, "model": args.model}),
    }
    seqs, ids, domains = load_segments(configs["ratio"], model.tokenizer)
    n_positions = sum(len(s) for s in seqs)

    def forward() -> None:
        for tokens, _ in batch_sequences(seqs, batch_size=8):
            model(tokens)

    def analysis(cfg):
        res = analyze_tokens(model, seqs, cfg, segment_ids=ids, domains=domains)
        summarize(res, cfg, n_layers=model.cfg.n_layers)

    load_before = os.getloadavg()
    with torch.no_grad():
        analysis(AnalyzeConfig(**base, compile=True, trajectories=False))  # compile once
        jobs = {"forward": forward, **{k: (lambda c=c: analysis(c)) for k, c in configs.items()}}
        runs: dict[str, list[float]] = {k: [] for k in jobs}
        for _ in range(args.repeats):
            for name, fn in jobs.items():
                t = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t)
    times = {k: summarize_times(v) for k, v in runs.items()}
    t_fwd = times.pop("forward")
    thesis_cfg = AnalyzeConfig.from_dict({**table61, "model": args.model, "n_segments": None,
                                          "max_tokens": 128})
    thesis_positions = sum(len(s) for s in load_segments(thesis_cfg, model.tokenizer)[0])
    rate61 = n_positions / times["ratio_table61"]["min"]
    res = {
        "model": args.model, "segments": len(seqs), "positions": n_positions,
        "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats, "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "forward_s": t_fwd, "forward_positions_per_s": n_positions / t_fwd["min"],
        "analysis_s": times, "model_load_s": t_load,
        **{k: t["min"] / t_fwd["min"] for k, t in times.items()},
        **{f"positions_per_s_{k[6:] or 'default'}": n_positions / t["min"] for k, t in times.items()},
        "thesis_positions": thesis_positions,
        "thesis_estimate_min": (t_load + thesis_positions / rate61) / 60,
        "thesis_estimate_default_min": (t_load + thesis_positions * times["ratio"]["min"]
                                        / n_positions) / 60,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"positions {n_positions} ({len(seqs)} segments); forward {t_fwd['min']:.2f}s "
          f"({res['forward_positions_per_s']:.0f} positions/s); threads {res['torch_threads']}; "
          f"load avg {load_before[0]:.2f} -> {res['load_avg_after'][0]:.2f}")
    for k, t in times.items():
        print(f"{k} {res[k]:.2f}  ({t['min']:.1f}s, median {t['median']:.1f}, max {t['max']:.1f}; "
              f"{n_positions / t['min']:.0f} positions/s)")
    print(f"thesis_estimate_min {res['thesis_estimate_min']:.1f}  (table61 settings, "
          f"{thesis_positions} positions; with the full defaults: "
          f"{res['thesis_estimate_default_min']:.0f} min)")


if __name__ == "__main__":
    main()
