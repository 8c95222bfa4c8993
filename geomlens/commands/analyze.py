"""`geomlens analyze`: how well does distance to the token embeddings rank the vocabulary like the
LM head's next-token distribution? (thesis Table 6.1)"""

from __future__ import annotations

import argparse

HELP = ("Compare distance-based vocabulary scores with the LM head's distribution "
        "(NDCG@k, JSD, Spearman, top-1/top-10; bootstrap CIs, permutation and random controls).")

_SCORES = ("inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot")


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _k(text: str) -> int | None:
    return None if text.lower() in ("full", "none") else int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name, e.g. smollm2-135m or gemma3-270m")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--domains", type=_str_list, default=None,
                     help="comma-separated bundled domains (default: all five)")
    src.add_argument("--texts", default=None, help="a local .jsonl/.txt file of segments")
    p.add_argument("--n-segments", type=int, default=None, help="segments per domain (default all)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per segment (truncated)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hidden", nargs="+", default=["ln_final", "resid_post"],
                   choices=["ln_final", "resid_post"], help="which hidden state(s) h")
    p.add_argument("--target", nargs="+", default=["W_E", "W_U"], choices=["W_E", "W_U"],
                   help="compare h with rows of W_E and/or columns of W_U")
    p.add_argument("--score", nargs="+", default=list(_SCORES), choices=_SCORES,
                   help="scores to evaluate (default: all six)")
    p.add_argument("--ks", nargs="+", type=_k, default=[1, 10, 100, None],
                   help="NDCG cut-offs; 'full' = whole vocabulary (default 1 10 100 full)")
    p.add_argument("--gain", default="exp2", choices=["exp2", "linear"],
                   help="NDCG gain: exp2 = 2^p - 1 (thesis), linear = p (sklearn)")
    p.add_argument("--jsd-base", default="nats", choices=["nats", "bits"])
    p.add_argument("--no-spearman", dest="spearman", action="store_false",
                   help="skip Spearman (saves one full sort per score)")
    p.add_argument("--topk-exact", type=int, default=256,
                   help="K: exact ranks for NDCG; NDCG@full beyond is bounded (default 256)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--n-permutations", type=int, default=20)
    p.add_argument("--control-positions", type=int, default=512,
                   help="positions used by the controls (default 512)")
    p.add_argument("--no-controls", dest="controls", action="store_false")
    p.add_argument("--no-trajectories", dest="trajectories", action="store_false",
                   help="skip the per-layer trajectory table")
    p.add_argument("--trajectory-segments", type=int, default=None,
                   help="per-layer trajectories for the first N segments only (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/analyze", help="run directory (a fresh sibling if it exists)")


def run(args: argparse.Namespace) -> int:
    from geomlens.analysis.config import AnalyzeConfig
    from geomlens.analysis.experiment import run_analysis
    from geomlens.analysis.summary import table_frame
    from geomlens.device import resolve_device
    from geomlens.runs import execute_run

    cfg = AnalyzeConfig(
        model=args.model, domains=args.domains, texts=args.texts, n_segments=args.n_segments,
        max_tokens=args.max_tokens, batch_size=args.batch_size, hidden=args.hidden,
        target=args.target, scores=args.score, ks=args.ks, gain=args.gain,
        jsd_base=args.jsd_base, spearman=args.spearman, topk_exact=args.topk_exact,
        n_bootstrap=args.n_bootstrap, n_permutations=args.n_permutations,
        control_positions=args.control_positions, controls=args.controls,
        trajectories=args.trajectories, trajectory_segments=args.trajectory_segments,
        seed=args.seed, device=str(resolve_device(args.device)),
    )
    run_dir, summary = execute_run(args.out, cfg, run_analysis, device=cfg.device)
    frame = table_frame(summary)
    short = [c for c in ("hidden", "target", "score", "ndcg@10", "ndcg@full", "jsd", "top1")
             if c in frame.columns]
    print(frame[short].to_string(index=False))
    print(f"NDCG@full max error bound: {summary['info']['ndcg_full_error_bound_max']:.2e}")
    print(f"wrote {run_dir}")
    return 0
