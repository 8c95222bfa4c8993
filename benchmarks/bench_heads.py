"""Training-step time of every LM head relative to `linear` (same model, batch, CPU).

    flock /tmp/geomlens-bench.lock python benchmarks/bench_heads.py [--vocab-size 8192]
        [--threads 2] [--rounds 5] [--heads linear,hybrid]

One step = forward, float32 cross-entropy, backward, AdamW step (as in `geomlens.training`).
Heads are timed in interleaved rounds (linear, tied, ..., linear, tied, ...) so that load from
other processes hits all of them alike. The headline ratio is min(step time of the head) /
min(step time of linear) over the rounds; the spread is the range of the per-round ratios. The
same ratio of process CPU time (all threads) is reported too: on a shared, overloaded machine
it does not count the time the process waits for a core.
Prints one ``ratio HEAD X`` line per head (for scripts) and writes
benchmarks/results/heads_v{vocab}.json. Goal: ratio ≤ 1.05 for every head.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from geomlens.heads import install_head, list_heads
from geomlens.models.micro import micro_config


def make_step(head: str, *, model: str, vocab: int, batch: int, seq: int, device: str = "cpu",
              compile: bool = False):
    cfg = micro_config(model, d_vocab=vocab, seed=0, device=device)
    m = HookedTransformer(cfg)
    install_head(m, head)
    m.train()
    fwd = torch.compile(m) if compile else m
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    y = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    cuda = device.startswith("cuda")
    # as in geomlens.training: bf16 autocast on CUDA, float32 on the CPU
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def step() -> tuple[float, float]:
        """(wall, process CPU) seconds of one step (CUDA: synchronized at both ends)."""
        if cuda:
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        with autocast:
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    return step


def _git_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="micro-1m")
    ap.add_argument("--vocab-size", "--vocab", dest="vocab", type=int, default=8192,
                    help="d_vocab (49152 = full SmolLM2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--heads", default=None, help="comma-separated subset (linear is always added)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast, as in training)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (as compile: true)")
    ap.add_argument("--out", default=None, help="JSON path (default results/heads_v{vocab}.json)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    heads = list_heads() if args.heads is None else ["linear"] + [
        h for h in args.heads.split(",") if h and h != "linear"]
    load_before = os.getloadavg()
    steps = {h: make_step(h, model=args.model, vocab=args.vocab, batch=args.batch, seq=args.seq,
                          device=args.device, compile=args.compile) for h in heads}
    for h in heads:
        for _ in range(args.warmup):
            steps[h]()
    times: dict[str, list[float]] = {h: [] for h in heads}
    cpu: dict[str, list[float]] = {h: [] for h in heads}
    for _ in range(args.rounds):
        for h in heads:
            wall, used = steps[h]()
            times[h].append(wall)
            cpu[h].append(used)
    load_after = os.getloadavg()
    best = {h: min(t) for h, t in times.items()}
    median = {h: statistics.median(t) for h, t in times.items()}
    ratio = {h: best[h] / best["linear"] for h in heads}
    ratio_cpu = {h: min(cpu[h]) / min(cpu["linear"]) for h in heads}
    per_round = {h: [a / b for a, b in zip(times[h], times["linear"])] for h in heads}
    print(f"{args.model}, d_vocab {args.vocab}, batch {args.batch} x {args.seq}, {args.device}, "
          f"{torch.get_num_threads()} thread(s), min of {args.rounds} interleaved rounds, "
          f"load avg {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'head':14s} {'min ms':>8s} {'median ms':>10s} {'ratio':>7s} {'round ratios':>14s} "
          f"{'cpu ms':>8s} {'cpu ratio':>9s}")
    for h in heads:
        lo, hi = min(per_round[h]), max(per_round[h])
        print(f"{h:14s} {1000 * best[h]:8.1f} {1000 * median[h]:10.1f} {ratio[h]:6.3f}x "
              f"{lo:6.3f}..{hi:.3f} {1000 * min(cpu[h]):8.1f} {ratio_cpu[h]:8.3f}x")
    for h in heads:
        print(f"ratio {h} {ratio[h]:.4f}")
    for h in heads:
        print(f"ratio_cpu {h} {ratio_cpu[h]:.4f}")
    result = {
        "settings": {**vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "platform": platform.platform(), "git": _git_hash(),
                     "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                     else platform.processor(),
                     "loadavg_before": load_before, "loadavg_after": load_after},
        "min_step_s": best,
        "median_step_s": median,
        "ratio_vs_linear": ratio,
        "ratio_cpu_vs_linear": ratio_cpu,
        "per_round_ratio": per_round,
        "all_step_s": times,
        "all_step_cpu_s": cpu,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"heads_v{args.vocab}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
