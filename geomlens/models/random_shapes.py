"""Random-weight models with the shapes of thesis-size models (no hub, no weights on disk).

They serve to plan and measure memory and speed before a real model is run: the cost of the
analysis is set by the shapes (d_vocab, d_model, n_layers), not by the values of the weights.
Every entry is a Llama-style `HookedTransformerConfig` (RMSNorm, rotary, gated MLP, GQA);
the Gemma-3 entry keeps Gemma-3-1B's sizes and 262,144-token vocabulary but not its
architectural details (sliding windows, QK-norm, soft-capping), which do not change the
vocabulary-sized work. Weights are initialized directly on the target device, in the target
dtype (an 8B model never passes through host memory in float32).

    load_model("random-llama-3.1-8b", device="cuda", dtype=torch.bfloat16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from geomlens.backend import require_tl3
from geomlens.errors import UnknownModelError

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer, HookedTransformerConfig


@dataclass(frozen=True, kw_only=True)
class RandomShape:
    """The sizes of a published model (from its Hugging Face config.json)."""

    like: str
    """The model whose shape this is."""
    d_model: int
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    tied_embeddings: bool
    act_fn: str = "silu"
    rotary_base: int = 500_000
    n_ctx: int = 16_384
    """Context of the config (the real models allow more; rotary tables grow with it)."""

    def n_params(self, n_layers: int | None = None) -> int:
        """Parameters (norm weights included; tied embeddings counted once)."""
        layers = self.n_layers if n_layers is None else n_layers
        attn = self.d_model * self.d_head * (2 * self.n_heads + 2 * self.n_key_value_heads)
        block = attn + 3 * self.d_model * self.d_mlp + 2 * self.d_model
        emb = self.d_vocab * self.d_model * (1 if self.tied_embeddings else 2)
        return layers * block + emb + self.d_model


RANDOM_SHAPES: dict[str, RandomShape] = {
    "random-llama-3.2-1b": RandomShape(
        like="meta-llama/Llama-3.2-1B", d_model=2048, n_layers=16, n_heads=32,
        n_key_value_heads=8, d_head=64, d_mlp=8192, d_vocab=128_256, tied_embeddings=True),
    "random-llama-3.1-8b": RandomShape(
        like="meta-llama/Llama-3.1-8B", d_model=4096, n_layers=32, n_heads=32,
        n_key_value_heads=8, d_head=128, d_mlp=14_336, d_vocab=128_256, tied_embeddings=False),
    "random-gemma-3-1b": RandomShape(
        like="google/gemma-3-1b-pt (sizes and vocabulary; Llama-style blocks)", d_model=1152,
        n_layers=26, n_heads=4, n_key_value_heads=1, d_head=256, d_mlp=6912, d_vocab=262_144,
        tied_embeddings=True, act_fn="gelu_pytorch_tanh", rotary_base=1_000_000),
}


def get_random_shape(name: str) -> RandomShape:
    if name not in RANDOM_SHAPES:
        raise UnknownModelError(
            f"Unknown random-weight shape {name!r}. Available: {', '.join(RANDOM_SHAPES)}")
    return RANDOM_SHAPES[name]


def random_config(
    name: str, *, n_layers: int | None = None, d_model: int | None = None,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
) -> HookedTransformerConfig:
    """The config of shape ``name``; ``n_layers`` / ``d_model`` shrink it (tests keep the full
    vocabulary width with few layers and a narrow residual stream)."""
    s = get_random_shape(name)
    width = d_model or s.d_model
    n_heads = s.n_heads if d_model is None else max(1, width // s.d_head)
    d_head = s.d_head if d_model is None else width // n_heads
    return require_tl3("A random-weight model").HookedTransformerConfig(
        model_name=name, d_model=width, d_head=d_head, n_heads=n_heads,
        n_key_value_heads=min(s.n_key_value_heads, n_heads), n_layers=n_layers or s.n_layers,
        d_mlp=s.d_mlp if d_model is None else 4 * width, d_vocab=s.d_vocab, n_ctx=s.n_ctx,
        act_fn=s.act_fn, gated_mlp=True, normalization_type="RMS", final_rms=True, eps=1e-5,
        positional_embedding_type="rotary", rotary_dim=d_head, rotary_adjacent_pairs=False,
        rotary_base=s.rotary_base, original_architecture="LlamaForCausalLM",
        default_prepend_bos=False, init_weights=True, initializer_range=0.02, seed=seed,
        device=str(device), dtype=dtype,
    )


def random_model(
    name: str, *, n_layers: int | None = None, d_model: int | None = None,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
) -> HookedTransformer:
    """A random-weight `HookedTransformer` of shape ``name``, built on ``device`` in ``dtype``
    (tied shapes get ``W_U = W_E.T`` exactly, as the real models' tied weights)."""
    cfg = random_config(name, n_layers=n_layers, d_model=d_model, device=device, dtype=dtype,
                        seed=seed)
    with torch.device(device):
        model = require_tl3("A random-weight model").HookedTransformer(cfg, move_to_device=False)
    if get_random_shape(name).tied_embeddings:
        with torch.no_grad():
            model.unembed.W_U.copy_(model.embed.W_E.T)
    model.geomlens_info = {
        "name": name, "tied_embeddings": get_random_shape(name).tied_embeddings,
        "processing": {"fold_ln": False, "center_writing_weights": False, "center_unembed": False},
        "source": f"random weights (seed {seed}) with the shape of {get_random_shape(name).like}",
        "d_vocab": cfg.d_vocab, "n_layers": cfg.n_layers, "d_model": cfg.d_model,
    }
    return model.eval()
