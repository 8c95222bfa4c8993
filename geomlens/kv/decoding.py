"""Incremental decoding with a first-layer (shared) KV cache: greedy or sampled.

`HookedTransformer.generate` builds its own full cache, so this is a plain loop over
``model(tokens, past_kv_cache=cache, attention_mask=...)``: one prefill pass over the prompt,
then one pass per new token. The cache comes from `geomlens.kv.cache.shared_kv_cache`; in
``prev`` mode the diagonal hooks of `geomlens.kv.patch` run as well (``share=False``: the cache
already shares the K/V). The prompt is a text, a list of texts or token ids
(`geomlens.data.inputs.as_sequences`); prompts in a batch have equal length (no padding).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from geomlens.data.inputs import as_sequences
from geomlens.errors import InputError
from geomlens.kv.cache import shared_kv_cache
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import check_patchable, patch_kv

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


@dataclass
class DecodeResult:
    tokens: Int[Tensor, "batch pos"]
    """Prompt followed by the generated tokens."""
    logits: Float[Tensor, "batch new_pos d_vocab"]
    """The next-token logits each generated token was chosen from."""
    cache: TransformerLensKeyValueCache
    """The cache after the last step (holds every position but the last generated one)."""


def next_token(
    logits: Float[Tensor, "batch d_vocab"],
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch"]:
    """Greedy (temperature 0) or sampled from softmax(logits / temperature), optionally top-k."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def decode(
    model: HookedTransformer,
    prompt: Any,
    layer_map: LayerMap | None = None,
    *,
    mode: str = "all",
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Generate ``max_new_tokens`` tokens after ``prompt`` (a text, a list of texts of equal
    token length, or token ids [pos] / [batch, pos]) with a cache holding only the source
    layers of ``layer_map`` (None = a standard cache, every layer its own K/V)."""
    if max_new_tokens < 1:
        raise InputError(f"decode: max_new_tokens must be >= 1, got {max_new_tokens}.")
    seqs = as_sequences(model, prompt, where="decode")
    if len({len(s) for s in seqs}) > 1:
        raise InputError(f"decode: the prompts have {sorted({len(s) for s in seqs})} tokens; "
                         "a batch needs prompts of equal length (no padding).")
    layer_map = layer_map or LayerMap.none(model.cfg.n_layers)
    check_patchable(model, layer_map, mode)
    device = model.cfg.device
    tokens = torch.stack(seqs).to(device)
    cache = shared_kv_cache(model, layer_map, batch_size=tokens.shape[0])
    hooks = (patch_kv(model, layer_map, mode, share=False)
             if mode == "prev" and layer_map.consumers else contextlib.nullcontext())
    step_logits = []
    with hooks:
        new = tokens
        for _ in range(max_new_tokens):
            mask = torch.ones_like(new)
            logits = model(new, past_kv_cache=cache, attention_mask=mask, return_type="logits")[:, -1]
            step_logits.append(logits)
            new = next_token(logits, temperature=temperature, top_k=top_k, generator=generator)[:, None]
            tokens = torch.cat([tokens, new], dim=1)
    return DecodeResult(tokens=tokens, logits=torch.stack(step_logits, dim=1), cache=cache)
