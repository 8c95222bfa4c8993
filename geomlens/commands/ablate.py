"""`geomlens ablate`: zero/mean/resample ablation of attention or MLP outputs."""

from __future__ import annotations

import argparse

HELP = "Ablate attn_out/mlp_out hooks (zero, mean or resample) and measure loss and NDCG changes."


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="model name (default smollm2-135m)")
    p.add_argument("--component", default="attn_out", choices=["attn_out", "mlp_out", "both"],
                   help="which block output to ablate (ignored with --sweep)")
    p.add_argument("--method", default="zero", choices=["zero", "mean", "resample"],
                   help="zero; mean over the batch's valid positions; resample from another "
                        "sequence of the batch at the same position (seeded)")
    p.add_argument("--layers", type=_int_list, default=None,
                   help="comma-separated layers ablated together (with --sweep: layers to sweep); default all")
    p.add_argument("--sweep", action="store_true",
                   help="ablate every layer x {attn_out, mlp_out} separately")
    p.add_argument("--domains", type=_str_list, default=None, help="comma-separated corpus domains")
    p.add_argument("--n-segments", type=int, default=20, help="segments per domain (default 20)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per segment (default 64)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--k", type=int, default=10, help="k of NDCG@k (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/ablate", help="run directory (a fresh sibling if it exists)")


def run(args: argparse.Namespace) -> int:
    from geomlens.ablation.config import AblateConfig
    from geomlens.ablation.experiment import run_ablation
    from geomlens.device import resolve_device
    from geomlens.runs import execute_run

    cfg = AblateConfig(
        model=args.model, component=args.component, method=args.method, layers=args.layers,
        sweep=args.sweep, domains=args.domains, n_segments=args.n_segments,
        max_tokens=args.max_tokens, batch_size=args.batch_size, k=args.k, seed=args.seed,
        device=str(resolve_device(args.device)),
    )
    run_dir, summary = execute_run(args.out, cfg, run_ablation, device=cfg.device)
    print(f"ablate: {summary['n_conditions']} conditions; clean loss {summary['clean_loss']:.4f}, "
          f"clean {summary['metric']} {summary['clean_metric']:.4f}")
    print(f"wrote {run_dir}")
    return 0
