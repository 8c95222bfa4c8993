"""Cost of the distance-vs-probability analysis relative to a plain forward pass.

On smollm2-135m (CPU), one batch of N x T tokens of bundled corpus text (default 8 x 256):

    ratio          = time(analyze_tokens: forward + all 6 scores vs p with NDCG@{1,10,100,full},
                     JSD, top-1, top-10; hidden=ln_final, target=W_E, no controls, no Spearman)
                     / time(plain forward pass model(tokens) on the same batch)
    ratio_spearman = the same with Spearman in the default configuration (averaged over
                     ``spearman_positions`` sampled positions)
    ratio_spearman_exact = Spearman at every position (--exact-spearman; slow)
    ratio_eager    = ratio with torch.compile off (--eager; the fallback path)
    ratio_permutations = (time(analysis + controls with --permutations permutations on 512
                     positions) - time(the same with 0 permutations)) / time(forward of those 512
                     positions): the cost of the permutation test (goal < 1), as a difference
                     of two ~8 s runs (its noise is of the order of the cost itself)
    ratio_permutations_inprocess = time spent inside the permutation test's own calls
                     (`PermutationNull.add_reference`, `add_pair`, `finish`: tables, null
                     kernel, sums), timed in the same runs / the same forward time
    peak_rss_mb    = process peak resident memory (resource.getrusage ru_maxrss)

torch.compile is forced on (what the default ``compile=None`` picks for >= 2048 positions) and
compiled on a warm-up run of every timed configuration (2 sequences) before timing. The jobs
run interleaved (forward, analysis, ..., then again), --repeats times; every time is the
minimum (median and maximum are recorded too); the load average is read before and after. Goals: ratio <= 1.3,
ratio_spearman <= 1.8. Printed as ``name value`` lines and written to
benchmarks/results/analysis[_MODEL].json.

    flock /tmp/geomlens-bench.lock python benchmarks/bench_analysis.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch


def time_permutation_test() -> list[float]:
    """Wrap `PermutationNull`'s calls with a timer; returns the list that collects their seconds
    (one entry per call; ``finish`` is consumed inside the timer)."""
    from geomlens.analysis.permutation import PermutationNull

    spent: list[float] = []

    def timed(fn, consume=False):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            out = iter(list(out)) if consume else out
            spent.append(time.perf_counter() - t)
            return out
        return wrapper

    PermutationNull.add_reference = timed(PermutationNull.add_reference)
    PermutationNull.add_pair = timed(PermutationNull.add_pair)
    PermutationNull.finish = timed(PermutationNull.finish, consume=True)
    return spent


def summarize(ts: list[float]) -> dict:
    return {"min": min(ts), "median": statistics.median(ts), "max": max(ts), "all": ts}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-seq", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--topk-exact", type=int, default=256)
    ap.add_argument("--exact-spearman", action="store_true", help="also time Spearman everywhere")
    ap.add_argument("--eager", action="store_true", help="also time the eager (uncompiled) path")
    ap.add_argument("--permutations", type=int, default=1023,
                    help="time the permutation test with this many permutations (0: skip)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from geomlens.analysis import AnalyzeConfig, analyze_tokens
    from geomlens.data import load_corpus, tokenize_segments
    from geomlens.models import load_model

    model = load_model(args.model, device="cpu")
    texts = load_corpus(n_segments=40)["text"]
    seqs = tokenize_segments(model.tokenizer, texts, max_tokens=args.seq_len)
    seqs = [s for s in seqs if len(s) == args.seq_len][: args.n_seq]
    if len(seqs) < args.n_seq:
        raise SystemExit(f"only {len(seqs)} corpus segments have {args.seq_len} tokens")
    tokens = torch.stack(seqs)

    def cfg(**kw) -> AnalyzeConfig:
        base = dict(model=args.model, hidden=["ln_final"], target=["W_E"], spearman=False,
                    controls=False, trajectories=False, layer_lens=False, calibrate=False,
                    batch_size=args.n_seq,
                    topk_exact=args.topk_exact, compile=True)
        return AnalyzeConfig(**{**base, **kw})

    configs = {"ratio": cfg(), "ratio_spearman": cfg(spearman=True)}
    if args.exact_spearman:
        configs["ratio_spearman_exact"] = cfg(spearman=True, spearman_positions=None)
    if args.eager:
        configs["ratio_eager"] = cfg(compile=False)
    if args.permutations:  # controls on the first 512 positions, with and without permutations
        ctl = dict(controls=True, control_positions=512)
        configs["controls_no_permutations"] = cfg(**ctl, n_permutations=0)
        configs["controls_permutations"] = cfg(**ctl, n_permutations=args.permutations)
    load_before = os.getloadavg()
    with torch.no_grad():
        model(tokens[:1, :16])
        for c in configs.values():  # compiles the fused kernels for every path that is timed
            analyze_tokens(model, seqs[:2], c)
    n_ctl = max(1, 512 // args.seq_len)
    jobs = {"forward": lambda: model(tokens), "forward_control": lambda: model(tokens[:n_ctl]),
            **{name: (lambda c=c: analyze_tokens(model, seqs, c)) for name, c in configs.items()}}
    runs: dict[str, list[float]] = {name: [] for name in jobs}
    rss = {}
    spent, inside = time_permutation_test(), []
    with torch.no_grad():
        for _ in range(args.repeats):  # interleaved, so every job sees the same machine state
            for name, fn in jobs.items():
                spent.clear()
                t = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t)
                rss[name] = rss_mb()
                if name == "controls_permutations":
                    inside.append(sum(spent))
    times = {name: summarize(ts) for name, ts in runs.items()}
    t_fwd, t_fwd_ctl = times.pop("forward"), times.pop("forward_control")
    perm_extra = {}
    if args.permutations:
        a, b = times.pop("controls_permutations"), times.pop("controls_no_permutations")
        delta = a["min"] - b["min"]
        perm_extra = {"permutations": args.permutations, "control_positions": 512,
                      "forward_control_positions_s": t_fwd_ctl,
                      "controls_s": {"with_permutations": a, "without": b},
                      "ratio_permutations": delta / t_fwd_ctl["min"],
                      "permutation_test_s": summarize(inside),
                      "ratio_permutations_inprocess": min(inside) / t_fwd_ctl["min"]}
    res = {
        "model": args.model, "batch": [args.n_seq, args.seq_len], "device": "cpu",
        "torch_threads": torch.get_num_threads(), "topk_exact": args.topk_exact,
        "repeats": args.repeats, "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "forward_s": t_fwd, "analysis_s": times,
        **{name: t["min"] / t_fwd["min"] for name, t in times.items()},
        "peak_rss_mb": rss, **perm_extra,
        "definition": "ratio = min time(analyze_tokens incl. its forward; 6 scores, "
                      "NDCG@1/10/100/full, JSD, top-1, top-10; ln_final vs W_E) / min time("
                      "model(tokens)); spearman_positions default for ratio_spearman",
    }
    out = Path(args.out) if args.out else (Path(__file__).parent / "results" / (
        "analysis.json" if args.model == "smollm2-135m" else f"analysis_{args.model}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    f = t_fwd
    print(f"forward_s {f['min']:.2f} (median {f['median']:.2f}, max {f['max']:.2f}); threads "
          f"{res['torch_threads']}; load avg {load_before[0]:.2f} -> {res['load_avg_after'][0]:.2f}")
    for name, t in times.items():
        print(f"{name} {res[name]:.3f}  (analysis {t['min']:.2f}s, median {t['median']:.2f}, "
              f"max {t['max']:.2f})")
    if perm_extra:
        print(f"ratio_permutations {perm_extra['ratio_permutations']:.3f}  ({args.permutations} "
              f"permutations on 512 positions: +{perm_extra['controls_s']['with_permutations']['min'] - perm_extra['controls_s']['without']['min']:.2f}s "
              f"vs forward of those positions {t_fwd_ctl['min']:.2f}s)")
        pt = perm_extra["permutation_test_s"]
        print(f"ratio_permutations_inprocess {perm_extra['ratio_permutations_inprocess']:.3f}  "
              f"(inside the permutation test: {pt['min']:.2f}s, median {pt['median']:.2f}, "
              f"max {pt['max']:.2f})")
    print(f"peak_rss_mb {max(rss.values()):.0f}")


if __name__ == "__main__":
    main()
