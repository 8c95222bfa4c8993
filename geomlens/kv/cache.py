"""A KV cache that stores only the source layers' keys and values (eqs. 5.17–5.18).

Built on TransformerLens's `TransformerLensKeyValueCache`: a source layer keeps an ordinary
`TransformerLensKeyValueCacheEntry` (K after the key norm and before rotary, V as ``hook_v``
gives it: [batch, pos, n_key_value_heads, d_head]). A consumer layer gets a `SharedKVEntry` that
holds no tensor and hands its layer the source entry's K/V; the layer then applies its own
rotary and its own mask (sliding window included). Because every layer reads the cached keys
before rotary, this is exactly the definition in `geomlens.kv.patch`, for any rotary base.

With ``mode="all"`` the cache alone does the sharing. ``mode="prev"`` also needs the diagonal
hooks: ``patch_kv(model, layer_map, "prev", share=False)`` (`geomlens.kv.decoding` does this).

Bytes per token, with GQA (n_kv key/value heads of size d_head, float32 = 4 bytes):
    standard        2 · L · n_kv · d_head · 4        (eq. 5.17)
    first-layer     2 · 1 · n_kv · d_head · 4        (eq. 5.18), i.e. L times smaller.
SmolLM2-135M: 2·30·3·64 = 11,520 floats per token vs 2·3·64 = 384 (ratio 30).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from geomlens.backend import require_tl3
from geomlens.errors import InputError
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import check_patchable

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


class SharedKVEntry:
    """The cache entry of a consumer layer: no tensors of its own, its source entry's K/V.

    It counts the positions it has served, so that ``past_keys.size(1)`` (the position offset
    the attention reads *before* appending) is right although the source entry, which runs
    earlier in the same forward pass, has already appended this step's tokens.
    """

    def __init__(self, source: TransformerLensKeyValueCacheEntry, source_layer: int) -> None:
        self.source = source
        self.source_layer = source_layer
        self.length = 0
        self.frozen = False

    @property
    def past_keys(self) -> Float[Tensor, "batch pos kv_head_index d_head"]:
        return self.source.past_keys[:, : self.length]

    @property
    def past_values(self) -> Float[Tensor, "batch pos kv_head_index d_head"]:
        return self.source.past_values[:, : self.length]

    def append(
        self, new_keys: Float[Tensor, "batch new_pos kv_head_index d_head"], new_values: Float[Tensor, "batch new_pos kv_head_index d_head"]
    ) -> tuple[Tensor, Tensor]:
        """Ignore this layer's own K/V; return the source's K/V up to the current position."""
        if self.frozen or self.source.frozen:
            raise InputError("A shared KV cache cannot be frozen: consumers read what their "
                             "source layer stored in the same step.")
        n = self.length + new_keys.shape[1]
        if self.source.past_keys.shape[1] < n:
            raise InputError(f"Source layer {self.source_layer} has not stored position {n - 1} yet.")
        self.length = n
        return self.source.past_keys[:, :n], self.source.past_values[:, :n]


def shared_kv_cache(
    model: HookedTransformer, layer_map: LayerMap, *, batch_size: int = 1
) -> TransformerLensKeyValueCache:
    """An empty cache for ``model`` in which only ``layer_map.sources`` store K/V (TransformerLens
    3's cache; under TransformerLens 4 a one-line error names the install command)."""
    require_tl3("A KV cache holding only the source layers (geomlens.kv.decode)")
    cfg = model.cfg
    check_patchable(model, layer_map, "all")
    if cfg.ungroup_grouped_query_attention:
        raise InputError("ungroup_grouped_query_attention breaks TransformerLens's KV cache; turn it off.")
    cache = TransformerLensKeyValueCache.init_cache(cfg, cfg.device, batch_size)
    for layer, source in enumerate(layer_map.source):
        if source != layer:
            cache.entries[layer] = SharedKVEntry(cache.entries[source], source)
    return cache


def cache_bytes(cache: TransformerLensKeyValueCache) -> int:
    """Bytes of the K/V tensors the cache holds: Σ numel × element_size over its entries
    (shared entries hold none; the small attention mask is not counted)."""
    total = 0
    for entry in cache.entries:
        if isinstance(entry, SharedKVEntry):
            continue
        for t in (entry.past_keys, entry.past_values):
            total += t.numel() * t.element_size()
    return total


def expected_cache_bytes(
    cfg, layer_map: LayerMap, n_tokens: int, *, batch_size: int = 1, dtype: torch.dtype | None = None
) -> int:
    """Eqs. 5.17–5.18: 2 · #sources · n_kv · d_head · tokens · batch · bytes per element."""
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    itemsize = torch.empty((), dtype=dtype or cfg.dtype).element_size()
    return 2 * len(layer_map.sources) * n_kv * cfg.d_head * n_tokens * batch_size * itemsize
