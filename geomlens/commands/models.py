"""`geomlens models`: list the model zoo."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def model_table():
    import pandas as pd

    from geomlens.models.micro import MICRO_SIZES, SMOLLM2_VOCAB, non_embedding_params
    from geomlens.models.zoo import OFFLINE_MODELS

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


def run(args) -> int:
    df = model_table()
    if args.csv:
        print(df.to_csv(index=False), end="")
    else:
        print(df.drop(columns=["install"]).to_string(index=False))
        print("\nAny TransformerLens official name (e.g. meta-llama/Llama-3.2-1B) also loads "
              "with Hugging Face hub access.")
    return 0
