"""Dequantized Hugging Face model -> HookedTransformer, one converter per architecture family.

Converters load the raw weights with *no* processing (no LayerNorm folding, no centering): the
geometry work measures distances to the raw W_E. `geomlens.models.load.load_model` applies any
processing the user asks for afterwards and records it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from geomlens.backend import require_tl3

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

Converter = Callable[..., "HookedTransformer"]
CONVERTERS: dict[str, Converter] = {}


def register_converter(family: str):
    def deco(fn: Converter) -> Converter:
        if family in CONVERTERS:
            raise ValueError(f"converter {family!r} already registered")
        CONVERTERS[family] = fn
        return fn

    return deco


def _no_processing(model: HookedTransformer, state_dict: dict) -> None:
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )


@register_converter("llama")
def llama_to_hooked(hf_model, tokenizer, *, name: str, device: str = "cpu") -> HookedTransformer:
    """LLaMA-architecture HF model (e.g. SmolLM2) -> HookedTransformer via
    `convert_llama_weights`, with a config filled from the HF config."""
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    hc = hf_model.config
    rope = getattr(hc, "rope_parameters", None) or {}
    d_head = getattr(hc, "head_dim", None) or hc.hidden_size // hc.num_attention_heads
    cfg = require_tl3("A GGUF -> HookedTransformer conversion").HookedTransformerConfig(
        model_name=name,
        d_model=hc.hidden_size,
        d_head=d_head,
        n_heads=hc.num_attention_heads,
        n_key_value_heads=hc.num_key_value_heads,
        d_mlp=hc.intermediate_size,
        n_layers=hc.num_hidden_layers,
        n_ctx=min(hc.max_position_embeddings, 8192),
        d_vocab=hc.vocab_size,
        eps=hc.rms_norm_eps,
        act_fn=hc.hidden_act,
        gated_mlp=True,
        normalization_type="RMS",
        final_rms=True,
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=rope.get("rope_theta", getattr(hc, "rope_theta", 10000.0)),
        rotary_adjacent_pairs=False,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        init_weights=False,
        device=device,
        dtype=torch.float32,
    )
    model = require_tl3("A GGUF -> HookedTransformer conversion").HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    _no_processing(model, convert_llama_weights(hf_model, cfg))
    return model


@register_converter("gemma3")
def gemma3_to_hooked(hf_model, tokenizer, *, name: str, device: str = "cpu") -> HookedTransformer:
    """Gemma-3 text model -> HookedTransformer through TransformerLens's own Gemma-3 path.

    Offline it needs two fixes: the GGUF-derived HF config still carries a
    ``quantization_config`` (the weights are already dequantized), which TL refuses, so it is
    dropped; and the official name resolves the architecture without asking the hub.
    """
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.is_quantized = False
    model = require_tl3("A GGUF -> HookedTransformer conversion").HookedTransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=hf_model, tokenizer=tokenizer, device=device,
        dtype=torch.float32,
    )
    model.cfg.model_name = name
    return model
