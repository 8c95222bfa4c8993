"""Tiny random Hugging Face models booted into a TransformerLens 4 ``TransformerBridge``
(downloads nothing; importable under TransformerLens 4, which has no HookedTransformer).

``llama``: 3 layers, GQA (4 query, 2 KV heads), one rotary base. ``gemma``: Gemma-3 with
qk-norm, 1 KV head, local / global / local layers (rotary bases 1e4 / 1e6, window 4).
"""

from __future__ import annotations

import copy

import torch

KINDS = ("llama", "gemma")


def hf_model(kind: str):
    """(transformers model in eval mode, the hub name whose adapter the bridge picks)."""
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=True, rope_theta=10_000.0)
        return LlamaForCausalLM(cfg).eval(), "HuggingFaceTB/SmolLM2-135M"
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                           max_position_embeddings=64, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm gains, so that a norm applied twice is visible
        for layer in model.model.layers:
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                norm.weight.normal_(0.0, 0.5)
    return model, "google/gemma-3-270m"


def tokenizer():
    """A 64-token word-level tokenizer built in memory (the bridge would fetch one otherwise)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(64)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                   bos_token="t1", eos_token="t2", pad_token="t3", unk_token="t0")


def bridge_and_reference(kind: str):
    """(bridge, an untouched copy of the same transformers model, hf model wrapped by the bridge)."""
    from geomlens.backend.tl4 import boot_bridge

    hf, name = hf_model(kind)
    reference = copy.deepcopy(hf)
    return boot_bridge(hf, tokenizer(), name=name), reference, hf
