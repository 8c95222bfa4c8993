"""Training-step time of every LM head relative to `linear` (same model, batch, CPU).

    OMP_NUM_THREADS=1 python benchmarks/bench_heads.py [--vocab 8192] [--rounds 7]

One step = forward, float32 cross-entropy, backward, AdamW step (as in `geomlens.training`).
Heads are timed in interleaved rounds (linear, tied, ..., linear, tied, ...) so that load from
other processes hits all of them alike; the reported time is the median over rounds. Prints the
ratios and writes benchmarks/results/heads.json. Goal: ratio ≤ 1.1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from geomlens.heads import install_head, list_heads
from geomlens.models.micro import micro_config


def make_step(head: str, *, model: str, vocab: int, batch: int, seq: int):
    cfg = micro_config(model, d_vocab=vocab, seed=0, device="cpu")
    m = HookedTransformer(cfg)
    install_head(m, head)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch, seq), generator=g)
    y = torch.randint(0, vocab, (batch, seq), generator=g)

    def step() -> float:
        t = time.perf_counter()
        loss = F.cross_entropy(m(x).float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="micro-1m")
    ap.add_argument("--vocab", type=int, default=8192, help="d_vocab (49152 = full SmolLM2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "heads.json"))
    args = ap.parse_args()

    heads = list_heads()
    steps = {h: make_step(h, model=args.model, vocab=args.vocab, batch=args.batch, seq=args.seq) for h in heads}
    for h in heads:
        for _ in range(args.warmup):
            steps[h]()
    times: dict[str, list[float]] = {h: [] for h in heads}
    for _ in range(args.rounds):
        for h in heads:
            times[h].append(steps[h]())
    median = {h: statistics.median(t) for h, t in times.items()}
    ratio = {h: median[h] / median["linear"] for h in heads}
    print(f"{args.model}, d_vocab {args.vocab}, batch {args.batch} x {args.seq}, "
          f"{torch.get_num_threads()} thread(s), median of {args.rounds} interleaved rounds")
    print(f"{'head':14s} {'ms/step':>9s} {'vs linear':>10s}")
    for h in heads:
        print(f"{h:14s} {1000 * median[h]:9.1f} {ratio[h]:9.2f}x")
    result = {
        "settings": {**vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "platform": platform.platform(), "device": "cpu"},
        "median_step_s": median,
        "ratio_vs_linear": ratio,
        "all_step_s": times,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
