"""First-layer K/V (thesis §5.2): every layer attends to layer 0's keys and values.

Hook patches for pretrained models (`patch_kv`), a KV cache that stores only the source layers
(`shared_kv_cache`, `decode`), losses (`segment_losses`; `kv_losses` -> `KVResult` for a
notebook), training from scratch (`share_kv`) and the ``kv`` run (`KVConfig`, `validate_kv`,
`run_kv`). See `geomlens.kv.patch`
for the exact definition. Names are imported lazily, so that configs can import
`geomlens.kv.layer_map` without loading TransformerLens.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LayerMap": "layer_map", "MODES": "layer_map", "check_spec": "layer_map",
    "KVHooks": "patch", "kv_hooks": "patch", "patch_kv": "patch", "install_kv_hooks": "patch",
    "key_recipe": "patch",
    "SharedKVEntry": "cache", "shared_kv_cache": "cache", "cache_bytes": "cache",
    "expected_cache_bytes": "cache",
    "decode": "decoding", "next_token": "decoding", "DecodeResult": "decoding",
    "segment_losses": "evaluate", "loss_rows": "evaluate", "ratio_ci": "evaluate",
    "kv_losses": "api", "measure_kv": "api", "KVResult": "result",
    "share_kv": "training", "unused_kv_parameters": "training",
    "KVConfig": "config", "validate_kv": "command", "run_kv": "command",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geomlens.kv' has no attribute {name!r}")
    return getattr(importlib.import_module(f"geomlens.kv.{_EXPORTS[name]}"), name)
