"""`geomlens train`: train a micro-LLaMA with a chosen LM head (thesis Table 6.2).

    geomlens train --model micro-1m --head hybrid --steps 300 --seed 0 --out runs/hybrid-s0
    geomlens train ... --out runs/hybrid-s0 --resume        # continue from the latest checkpoint
    torchrun --nproc_per_node=4 -m geomlens train --model micro-70m --split train_gpu ...
"""

from __future__ import annotations

import argparse
import json
import os

HELP = "Train a micro-LLaMA with a KNN / kernel / linear LM head; writes metrics.csv and summary.json."


def _float_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="micro-1m", help="micro size: micro-1m, micro-10m, micro-70m")
    parser.add_argument("--head", default="linear", help="LM head name (see geomlens.heads.list_heads())")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="keep the N-1 most frequent training tokens, the rest -> one OOV id (CPU shortcut)")
    parser.add_argument("--head-kwargs", default="{}", help='JSON dict of head options, e.g. \'{"hidden": 32}\'')
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", type=int, help="training tokens (all processes together)")
    budget.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kernel-lr", type=_float_or_none, default=None, help="lr of σ/f/MLP/b_v (default: --lr)")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--kernel-weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--grad-clip", type=_float_or_none, default=1.0, help="'none' disables clipping")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-tokens", type=int, default=32768)
    parser.add_argument("--sigma-init", choices=["uniform", "frequency"], default="uniform")
    parser.add_argument("--split", choices=["train_cpu", "train_gpu"], default="train_cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (else a new dir is used)")


def config_from_args(args: argparse.Namespace):
    from geomlens.errors import InputError
    from geomlens.training.config import TrainConfig

    try:
        head_kwargs = json.loads(args.head_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--head-kwargs is not valid JSON: {exc}") from None
    if not isinstance(head_kwargs, dict):
        raise InputError("--head-kwargs must be a JSON object, e.g. '{\"hidden\": 32}'.")
    return TrainConfig(
        model=args.model, head=args.head, vocab_size=args.vocab_size, head_kwargs=head_kwargs, tokens=args.tokens,
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
        kernel_lr=args.kernel_lr, weight_decay=args.weight_decay,
        kernel_weight_decay=args.kernel_weight_decay, warmup=args.warmup, grad_clip=args.grad_clip,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens, sigma_init=args.sigma_init,
        split=args.split, compile=args.compile, device=args.device, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from geomlens.errors import InputError
    from geomlens.heads import get_head_class
    from geomlens.models.micro import MICRO_SIZES
    from geomlens.runs import RunDirError, create_run_dir, is_done, mark_done, write_json
    from geomlens.training.experiment import run_training

    cfg = config_from_args(args)
    get_head_class(cfg.head)  # fail fast on an unknown head
    if cfg.model not in MICRO_SIZES:
        raise InputError(f"Unknown micro size {cfg.model!r}. Available: {', '.join(MICRO_SIZES)}")
    is_main = int(os.environ.get("RANK", "0")) == 0
    out = Path(args.out)
    if args.resume and is_done(out):
        print(f"{out} is already finished (delete its 'done' file to rerun).")
        return 0
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Under torchrun every rank must use the same directory, so a fresh run needs an empty --out.
    mode = "resume" if args.resume else ("error" if distributed else "new")
    if is_main:
        try:
            run_dir = create_run_dir(out, config=cfg, seed=cfg.seed, device=cfg.device, mode=mode)
        except RunDirError as exc:
            raise InputError(str(exc)) from None
    else:
        run_dir = out  # under torchrun only rank 0 creates the directory; ranks use --out as given
    summary = run_training(cfg, run_dir)
    if is_main:
        write_json(run_dir / "summary.json", summary)
        mark_done(run_dir)
        print(json.dumps({k: summary[k] for k in ("val_loss", "val_perplexity", "val_accuracy",
                                                   "head_params", "tokens_per_s")}, indent=2))
        print(f"run dir: {run_dir}")
    return 0
