"""On-disk cache of converted HookedTransformers: ``<cache>/models/<name>/`` holds
``model.safetensors`` (raw, unprocessed weights), ``config.json`` (the HookedTransformerConfig)
and ``tokenizer/``. The cache root is ``$GEOMLENS_CACHE`` or ``~/.cache/geomlens``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from geomlens.backend import require_tl3
from geomlens.paths import cache_root

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer, HookedTransformerConfig

CACHE_VERSION = 1


def model_cache_dir(name: str) -> Path:
    return cache_root() / "models" / f"{name}-v{CACHE_VERSION}"


def config_to_json(cfg: HookedTransformerConfig) -> dict:
    """The config's fields as JSON values (dtype as its name; device, tokenizer_name and values
    JSON cannot hold are left out)."""
    out = {}
    for key, value in cfg.to_dict().items():
        if key in ("device", "tokenizer_name") or callable(value):
            continue
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return json.loads(json.dumps(out))  # plain Python values (numpy floats become float)


def config_from_json(values: dict, *, device: str = "cpu") -> HookedTransformerConfig:
    """The config `config_to_json` wrote, on ``device``, for weights that will be loaded."""
    values = dict(values)
    dtype = getattr(torch, values.get("dtype", "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {values.get('dtype')!r}")
    values.update(dtype=dtype, device=device, init_weights=False)
    for derived in ("n_params", "d_vocab_out"):  # recomputed by __post_init__
        values.pop(derived, None)
    return require_tl3("The converted-weights cache").HookedTransformerConfig(**values)


def save_to_cache(model: HookedTransformer, name: str, tokenizer) -> Path:
    """Cache raw weights, config and the model's *native* tokenizer (not TL's BOS-wrapped one).

    Safe when several processes convert the same model at once (the ranks of a torchrun
    launch on one node): each writes its own temporary directory, the first complete one is
    renamed into place and the others are dropped."""
    import shutil

    from safetensors.torch import save_file

    path = model_cache_dir(name)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config_to_json(model.cfg), indent=1))
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    if not (path / "model.safetensors").exists():  # absent, or left half-written by a crash
        shutil.rmtree(path, ignore_errors=True)
        try:
            tmp.rename(path)  # atomic: a half-written cache is never read
            return path
        except OSError:  # another process renamed its copy into place first
            if not (path / "model.safetensors").exists():
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_from_cache(name: str, *, device: str = "cpu") -> HookedTransformer | None:
    """Return the cached model, or None if it is not cached."""
    path = model_cache_dir(name)
    if not (path / "model.safetensors").exists():
        return None
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    cfg = config_from_json(json.loads((path / "config.json").read_text()), device=device)
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = require_tl3("The converted-weights cache").HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    set_native_tokenizer(model, tokenizer)
    return model


def set_native_tokenizer(model: HookedTransformer, tokenizer) -> None:
    """Use the model's own tokenizer as-is. TransformerLens swaps in a copy that always adds
    BOS; SmolLM2 was trained without one, so geomlens keeps the native convention
    (``model.to_tokens`` still adds BOS when ``prepend_bos=True`` or the config says so)."""
    model.tokenizer = tokenizer
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
