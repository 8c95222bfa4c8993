"""The model tools: `geomlens models` (the zoo) and `geomlens smoke` (top next tokens and the
loss on a few segments, a quick check that a model loads and predicts)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from geomlens.config.build import build_config
from geomlens.config.flags import add_config_arguments, namespace_values
from geomlens.data.source import TextSource, load_segments, text_field
from geomlens.device import resolve_device
from geomlens.models.inputs import check_model_inputs
from geomlens.models.load import load_model
from geomlens.models.micro import MICRO_SIZES, SMOLLM2_VOCAB, non_embedding_params
from geomlens.models.zoo import OFFLINE_MODELS
from geomlens.runner.command import Tool


def add_models_arguments(parser) -> None:
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def model_table():
    rows = [
        {"name": m.name, "kind": "pretrained (offline)", "params": m.n_params,
         "embeddings": "tied" if m.tied_embeddings else "untied", "source": m.source,
         "install": m.install}
        for m in OFFLINE_MODELS.values()
    ]
    for name, size in MICRO_SIZES.items():
        rows.append({
            "name": name, "kind": "micro-LLaMA (train from scratch)",
            "params": non_embedding_params(name) + SMOLLM2_VOCAB * size.d_model,
            "embeddings": "head-dependent (see --head)",
            "source": f"native HookedTransformerConfig: d_model {size.d_model}, "
                      f"{size.n_layers} layers, SmolLM2 tokenizer",
            "install": "-",
        })
    return pd.DataFrame(rows)


def run_models(args) -> int:
    df = model_table()
    if args.csv:
        print(df.to_csv(index=False), end="")
    else:
        print(df.drop(columns=["install"]).to_string(index=False))
        print("\nAny TransformerLens official name (e.g. meta-llama/Llama-3.2-1B) also loads "
              "with Hugging Face hub access.")
    return 0


@dataclass(kw_only=True)
class SmokeConfig(TextSource):
    """A quick look at a model: the loss per domain and the top next tokens after one segment."""
    model: str = "smollm2-135m"
    """Model name or training run directory (see `geomlens models`)."""
    max_tokens: int = text_field("max_tokens", 64)
    device: str | None = None
    """Torch device (None = cuda if available, else cpu)."""


def add_smoke_arguments(parser) -> None:
    add_config_arguments(parser, SmokeConfig)


def run_smoke(args) -> int:


    cfg = build_config(SmokeConfig, namespace_values(args, SmokeConfig), source_of=lambda k: "command line")
    resolve_device(cfg.device)
    check_model_inputs(cfg)
    model = load_model(cfg.model, device=cfg.device)
    seqs, _, domains = load_segments(cfg, model.tokenizer)
    for domain in dict.fromkeys(domains):
        mine = [seq for seq, d in zip(seqs, domains) if d == domain]
        losses = []
        with torch.no_grad():
            for seq in mine:
                logits = model(seq[None].to(model.cfg.device))
                losses.append(torch.nn.functional.cross_entropy(
                    logits[0, :-1], seq[1:].to(logits.device)).item())
        top = model(mine[0][None].to(model.cfg.device))[0, -1].topk(5)
        words = [repr(model.tokenizer.decode([int(i)])) for i in top.indices]
        context = model.tokenizer.decode(mine[0][-12:]).replace("\n", " ")
        print(f"[{domain}] mean loss {sum(losses) / len(losses):.3f} over {len(mine)} segment(s); "
              f"after ...{context!r}")
        print(f"    top-5 next: {', '.join(words)}")
    return 0



COMMANDS = (
    Tool("models", add_models_arguments, run_models,
         help="list the model zoo (offline models, micro sizes)"),
    Tool("smoke", add_smoke_arguments, run_smoke,
         help="load a model and print its top next tokens per domain"),
)
