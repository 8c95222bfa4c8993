"""First-layer K/V (thesis §5.2): every layer attends to layer 0's keys and values.

Hook patches for pretrained models (`patch_kv`), a KV cache that stores only the source layers
(`shared_kv_cache`, `decode`), losses (`segment_losses`) and the ``kv`` run (`KVConfig`,
`run_kv`). See `geomlens.kv.patch` for the exact definition.
"""

from geomlens.kv.cache import SharedKVEntry, cache_bytes, expected_cache_bytes, shared_kv_cache
from geomlens.kv.decode import DecodeResult, decode, next_token
from geomlens.kv.layer_map import LayerMap, check_spec
from geomlens.kv.patch import MODES, KVHooks, install_kv_hooks, key_recipe, kv_hooks, patch_kv

__all__ = [
    "LayerMap", "check_spec", "MODES", "KVHooks", "kv_hooks", "patch_kv", "install_kv_hooks",
    "key_recipe", "SharedKVEntry", "shared_kv_cache", "cache_bytes", "expected_cache_bytes",
    "decode", "next_token", "DecodeResult",
]
