"""Cost of the distance-vs-probability analysis relative to a plain forward pass.

On smollm2-135m (CPU), one batch of N x T tokens of bundled corpus text (default 8 x 256):

    ratio          = time(analyze_tokens: forward + all 6 scores vs p with NDCG@{1,10,100,full},
                     JSD, top-1, top-10; hidden=ln_final, target=W_E, no controls)
                     / time(plain forward pass model(tokens) on the same batch)
    ratio_spearman = the same with Spearman over the full vocabulary added
    peak_rss_mb    = process peak resident memory (resource.getrusage ru_maxrss)

Each time is the minimum over --repeats runs. Goal: ratio <= 1.5. Results are printed and
written to benchmarks/results/analysis.json.

    .venv/bin/python benchmarks/bench_analysis.py [--n-seq 8] [--seq-len 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-seq", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--topk-exact", type=int, default=256)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "analysis.json"))
    args = ap.parse_args()

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

    def cfg(spearman: bool) -> AnalyzeConfig:
        return AnalyzeConfig(model=args.model, hidden=["ln_final"], target=["W_E"],
                             spearman=spearman, controls=False, trajectories=False,
                             batch_size=args.n_seq, topk_exact=args.topk_exact)

    with torch.no_grad():
        model(tokens[:1, :16])  # warm-up
        t_fwd = _best(lambda: model(tokens), args.repeats)
    rss_fwd = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_ana = _best(lambda: analyze_tokens(model, seqs, cfg(False)), args.repeats)
    rss_ana = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_sp = _best(lambda: analyze_tokens(model, seqs, cfg(True)), args.repeats)
    rss_sp = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {
        "model": args.model, "batch": [args.n_seq, args.seq_len], "device": "cpu",
        "torch_threads": torch.get_num_threads(), "topk_exact": args.topk_exact,
        "forward_s": t_fwd, "analysis_s": t_ana, "analysis_spearman_s": t_sp,
        "ratio": t_ana / t_fwd, "ratio_spearman": t_sp / t_fwd,
        "peak_rss_mb_after_forward": rss_fwd, "peak_rss_mb_after_analysis": rss_ana,
        "peak_rss_mb_after_spearman": rss_sp,
        "definition": "ratio = time(analyze_tokens incl. its forward; 6 scores, NDCG@1/10/100/full, "
                      "JSD, top-1, top-10; ln_final vs W_E) / time(model(tokens)); min of repeats",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"forward {t_fwd:.2f}s  analysis {t_ana:.2f}s  +spearman {t_sp:.2f}s")
    print(f"ratio {res['ratio']:.2f}  ratio_spearman {res['ratio_spearman']:.2f}  "
          f"peak RSS {rss_sp:.0f} MB (after forward {rss_fwd:.0f} MB)")


if __name__ == "__main__":
    main()
