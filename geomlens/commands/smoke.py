"""`geomlens smoke`: load a model, print top next-token predictions and the loss on a few segments."""

from __future__ import annotations

from dataclasses import dataclass

from geomlens.data.source import TextSource, text_field


@dataclass(kw_only=True)
class SmokeConfig(TextSource):
    """A quick look at a model on a few segments."""

    model: str = "smollm2-135m"
    """Model name or training run directory (see `geomlens models`)."""
    n_segments: int | None = text_field("n_segments", 1)
    max_tokens: int = text_field("max_tokens", 64)
    device: str | None = None
    """Torch device (None = cuda if available, else cpu)."""


def add_arguments(parser) -> None:
    from geomlens.config.flags import add_config_arguments

    add_config_arguments(parser, SmokeConfig)


def run(args) -> int:
    import torch

    from geomlens.config.build import build_config
    from geomlens.config.flags import namespace_values
    from geomlens.data.source import check_text_source, load_segments
    from geomlens.models import load_model

    cfg = build_config(SmokeConfig, namespace_values(args, SmokeConfig), source_of=lambda k: "command line")
    check_text_source(cfg)
    model = load_model(cfg.model, device=cfg.device)
    seqs, _, domains = load_segments(cfg, model.tokenizer)
    for domain, seq in zip(domains, seqs):
        with torch.no_grad():
            logits = model(seq[None].to(model.cfg.device))
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], seq[1:].to(logits.device))
        top = logits[0, -1].topk(5)
        words = [repr(model.tokenizer.decode([int(i)])) for i in top.indices]
        context = model.tokenizer.decode(seq[-12:]).replace("\n", " ")
        print(f"[{domain}] loss={loss.item():.3f}  ...{context!r}")
        print(f"    top-5 next: {', '.join(words)}")
    return 0
