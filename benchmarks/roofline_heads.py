"""Roofline of the distance heads' extra cost: this machine's matmul GFLOP/s and the time of one
elementwise pass over a [tokens, d_vocab] float32 matrix, and the smallest step-time ratio to
`linear` that k such passes allow.

    flock /tmp/geomlens-bench.lock python benchmarks/roofline_heads.py [--vocab-size 49152]

A distance head runs the same three [tokens, d_model] x [d_model, d_vocab]-sized matmuls as the
linear head, and k more passes over [tokens, d_vocab] than it (one pass = reading or writing
4·tokens·d_vocab bytes once). With the linear step time t_lin from bench_heads.py's JSON, the
ratio cannot go below 1 + k·t_pass / t_lin. Writes benchmarks/results/roofline_v{vocab}.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=49152)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    T, V, D = args.tokens, args.vocab_size, args.d_model
    g = torch.Generator().manual_seed(0)
    h, W = torch.randn(T, D, generator=g), torch.randn(V, D, generator=g)
    x, y = torch.randn(T, V, generator=g), torch.empty(T, V)
    load = os.getloadavg()
    flops = 2.0 * T * V * D
    mm = {
        "forward h W^T": _best(lambda: torch.mm(h, W.T, out=y), args.repeats),
        "grad_h g W": _best(lambda: torch.mm(x, W), args.repeats),
        "grad_W g^T h": _best(lambda: torch.mm(x.T, h), args.repeats),
    }
    pass_bytes = 4.0 * T * V
    passes = {  # seconds per [T, V] pass (one read or one write of the matrix)
        "read (sum)": _best(lambda: x.sum(), args.repeats),
        "read+write in place (mul_)": _best(lambda: x.mul_(1.0), args.repeats) / 2,
        "read+write into a buffer": _best(lambda: torch.mul(x, 1.0, out=y), args.repeats) / 2,
        "read+write, fresh tensor": _best(lambda: x * 1.0, args.repeats) / 2,
    }
    t_pass = passes["read+write into a buffer"]
    print(f"tokens {T}, d_vocab {V}, d_model {D}, {args.threads} thread(s), load avg {load[0]:.2f}")
    for k, t in mm.items():
        print(f"matmul {k:14s} {1000 * t:7.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s")
    for k, t in passes.items():
        print(f"pass {k:27s} {1000 * t:6.1f} ms  {pass_bytes / t / 1e9:5.1f} GB/s")
    result = {"settings": {**vars(args), "loadavg": load, "torch": torch.__version__},
              "matmul_s": mm, "matmul_gflops": {k: flops / t / 1e9 for k, t in mm.items()},
              "pass_s": passes, "pass_gbps": {k: pass_bytes / t / 1e9 for k, t in passes.items()}}
    bench = Path(__file__).parent / "results" / f"heads_v{V}.json"
    if bench.exists():
        t_lin = json.loads(bench.read_text())["min_step_s"]["linear"]
        result["linear_step_s"] = t_lin
        result["min_ratio_for_k_passes"] = {k: 1 + k * t_pass / t_lin for k in range(1, 7)}
        print(f"linear step {1000 * t_lin:.0f} ms (from {bench.name}); one pass {1000 * t_pass:.1f} ms "
              f"= {t_pass / t_lin:.3f} of it")
        for k in range(1, 7):
            print(f"min ratio with k={k} extra passes: {1 + k * t_pass / t_lin:.3f}")
    out = Path(__file__).parent / "results" / f"roofline_v{V}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
