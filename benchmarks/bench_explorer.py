"""Budgets of the explorer (`geomlens.explore`), on this machine's CPU:

    forward_s      a plain forward pass of the same tokens (compute_over_forward: the ratio, which
                   a loaded machine distorts less than either time)
    compute_s      Explorer(model, 128 tokens): forward pass, 4 lenses x every block x every
                   position (top-10, ranks, NDCG@10, JSD), trajectories, the last position's
                   movers                                                   budget <= 5 s
    toggle_s       the view's ``intervene`` message (zero ablation of one block's MLP, the
                   selected lens, every row rescored against the new p) + the changed payload
                                                                            budget <= 3 s
    payload_bytes  the gzip payload the widget receives (128 tokens x 30 layers x 4 lenses x
                   top-10, plus trajectories and movers)                    budget <= 1 MB
    html_bytes     the standalone page (payload as base64, module and CSS inlined)
    gemma_compute_s, gemma_peak_rss_mb: the same compute on gemma3-270m (262,144 tokens)
                   (budget <= 20 s); the peak resident memory of the process, against
                   full_tensor_mb = n_layers x positions x d_vocab x 4 bytes (a tensor the code
                   never forms: scores exist for one row and ~32 positions at a time)

Every time is the minimum of --repeats runs after one warm-up (median and max recorded), with
torch pinned to --threads threads; the load average is read before and after. Printed as
``name value`` lines and written to benchmarks/results/explorer.json.

    flock /tmp/geomlens-heavy.lock python benchmarks/bench_explorer.py [--repeats 3] [--threads 2]
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

TEXT = ("The capital of France is Paris. The river that runs through the city is the Seine, and "
        "the cathedral on its island is Notre-Dame. ")


def tokens_of(model, n: int) -> torch.Tensor:
    toks = model.to_tokens(TEXT * 20)[0]
    assert len(toks) >= n
    return toks[:n]


def timed(fn, repeats: int, name: str = "") -> tuple[list[float], object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        print(f"# {name} run {len(times)}: {times[-1]:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    return times, out


def stats(name: str, times: list[float]) -> dict[str, float]:
    return {f"{name}": min(times), f"{name}_median": statistics.median(times), f"{name}_max": max(times)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--no-gemma", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from geomlens.explorer import export
    from geomlens.explorer.view import Explorer
    from geomlens.models import load_model

    out: dict[str, object] = {"threads": args.threads, "repeats": args.repeats,
                              "tokens": args.tokens, "load_before": os.getloadavg()}
    model = load_model("smollm2-135m", device="cpu")
    toks = tokens_of(model, args.tokens)
    with torch.no_grad():
        times, _ = timed(lambda: model(toks[None]), args.repeats, "forward")
    out.update(stats("forward_s", times))
    times, ex = timed(lambda: Explorer(model, toks), args.repeats, "compute")
    out.update(stats("compute_s", times))
    out["compute_over_forward"] = out["compute_s"] / out["forward_s"]
    msg = {"type": "intervene", "target": "mlp", "layer": 10, "method": "zero", "lens": "logit"}
    times, _ = timed(lambda: (ex.handle(msg), ex.changed_payload()), args.repeats, "toggle")
    out.update(stats("toggle_s", times))
    out["payload_bytes"] = len(ex.payload())
    out["changed_payload_bytes"] = len(ex.changed_payload())
    out["html_bytes"] = len(export.html(ex).encode())
    out["n_layers"], out["lenses"] = model.cfg.n_layers, list(ex.lenses)
    del model, ex
    if not args.no_gemma:
        gemma = load_model("gemma3-270m", device="cpu")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gt = tokens_of(gemma, args.tokens)
        times, gex = timed(lambda: Explorer(gemma, gt), args.repeats, "gemma compute")
        out.update(stats("gemma_compute_s", times))
        out["gemma_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["gemma_rss_before_mb"] = rss0
        out["gemma_full_tensor_mb"] = gemma.cfg.n_layers * args.tokens * gemma.cfg.d_vocab * 4 / 2**20
        out["gemma_payload_bytes"] = len(gex.payload())
    out["load_after"] = os.getloadavg()
    for k, v in out.items():
        print(k, v)
    path = Path(__file__).parent / "results" / "explorer.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
