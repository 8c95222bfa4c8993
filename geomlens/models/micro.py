"""micro-LLaMA: native `HookedTransformerConfig`s by size name, for training from scratch.

RMSNorm, rotary embeddings (non-adjacent pairs, as HF Llama), gated SiLU MLP, optional GQA and
the SmolLM2 tokenizer (vocab 49152). The size name counts *non-embedding* parameters
(attention + MLP), the usual convention for small LMs; the embedding adds 49152 * d_model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from geomlens.backend import require_tl3
from geomlens.errors import UnknownModelError

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig

SMOLLM2_VOCAB = 49152


@dataclass(frozen=True, kw_only=True)
class MicroSize:
    d_model: int
    n_layers: int
    n_heads: int
    n_key_value_heads: int | None
    d_mlp: int
    n_ctx: int = 256


#: size name -> shape. Non-embedding parameters in the name; see `non_embedding_params`.
MICRO_SIZES: dict[str, MicroSize] = {
    "micro-1m": MicroSize(d_model=128, n_layers=5, n_heads=4, n_key_value_heads=2, d_mlp=384),
    "micro-10m": MicroSize(d_model=256, n_layers=12, n_heads=4, n_key_value_heads=2, d_mlp=768),
    "micro-70m": MicroSize(
        d_model=512, n_layers=14, n_heads=8, n_key_value_heads=4, d_mlp=1536, n_ctx=512
    ),
}


def micro_config(
    name: str,
    *,
    d_vocab: int = SMOLLM2_VOCAB,
    n_ctx: int | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> HookedTransformerConfig:
    """Build the native config for a micro-LLaMA size (`MICRO_SIZES`).

    Args:
        name: e.g. ``"micro-1m"``.
        d_vocab: vocabulary size (49152 for the SmolLM2 tokenizer).
        n_ctx: context length; None keeps the size's default.
        seed: TransformerLens init seed.
        device: device for the model.
    """
    if name not in MICRO_SIZES:
        raise UnknownModelError(
            f"Unknown micro-LLaMA size {name!r}. Available: {', '.join(MICRO_SIZES)}"
        )
    s = MICRO_SIZES[name]
    d_head = s.d_model // s.n_heads
    return require_tl3("A micro config").HookedTransformerConfig(
        model_name=name,
        d_model=s.d_model,
        d_head=d_head,
        n_heads=s.n_heads,
        n_key_value_heads=s.n_key_value_heads,
        n_layers=s.n_layers,
        d_mlp=s.d_mlp,
        d_vocab=d_vocab,
        n_ctx=n_ctx if n_ctx is not None else s.n_ctx,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        final_rms=True,
        eps=1e-5,
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_adjacent_pairs=False,
        rotary_base=10000,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        init_weights=True,
        initializer_range=0.02,
        seed=seed,
        device=device,
    )


def non_embedding_params(name: str) -> int:
    """Attention + MLP parameters of a micro size (norm weights excluded)."""
    s = MICRO_SIZES[name]
    d_head = s.d_model // s.n_heads
    kv = s.n_key_value_heads or s.n_heads
    attn = 2 * s.d_model * s.n_heads * d_head + 2 * s.d_model * kv * d_head
    mlp = 3 * s.d_model * s.d_mlp
    return s.n_layers * (attn + mlp)
