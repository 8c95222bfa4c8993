"""`geomlens smoke`: load a model, print top next-token predictions and the loss on a few segments."""

from __future__ import annotations

HELP = "Smoke run: top next-token predictions and loss for a few corpus segments."


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-segments", type=int, default=1, help="segments per domain")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)


def run(args) -> int:
    import torch

    from geomlens.data import load_corpus, tokenize_segments
    from geomlens.models import load_model

    model = load_model(args.model, device=args.device)
    ds = load_corpus(n_segments=args.n_segments)
    seqs = tokenize_segments(model.tokenizer, ds["text"], max_tokens=args.max_tokens)
    for domain, seq in zip(ds["domain"], seqs):
        with torch.no_grad():
            logits = model(seq[None].to(model.cfg.device))
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], seq[1:].to(logits.device))
        top = logits[0, -1].topk(5)
        words = [repr(model.tokenizer.decode([int(i)])) for i in top.indices]
        context = model.tokenizer.decode(seq[-12:]).replace("\n", " ")
        print(f"[{domain}] loss={loss.item():.3f}  ...{context!r}")
        print(f"    top-5 next: {', '.join(words)}")
    return 0
