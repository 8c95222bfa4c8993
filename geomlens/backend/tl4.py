"""TransformerLens 4: `BridgeView` over a ``TransformerBridge``, and `boot_bridge`, which wraps an
already-built Hugging Face model (the offline GGUF path: no hub).

The bridge is booted with ``enable_compatibility_mode(no_processing=True)``: raw weights (as
geomlens loads them on TransformerLens 3) plus the legacy hook names (``hook_resid_post``,
``attn.hook_k`` ...) that `geomlens.backend.view.BlockHooks` gives.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from geomlens.backend.view import ModelView
from geomlens.errors import InputError


def boot_bridge(hf_model: Any, tokenizer: Any, *, name: str, device: str = "cpu") -> Any:
    """A ``TransformerBridge`` around ``hf_model`` (weights untouched, legacy hook names on)."""
    from transformer_lens.model_bridge import TransformerBridge

    if hasattr(hf_model.config, "quantization_config"):  # GGUF, already dequantized
        del hf_model.config.quantization_config
    hf_model.is_quantized = False
    if not getattr(hf_model.config, "architectures", None):  # picks TransformerLens's adapter
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=_boot_tokenizer(tokenizer), device=device,
        dtype=torch.float32)
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
    return bridge.eval()


def _boot_tokenizer(tokenizer: Any) -> Any:
    """A shallow copy that says it already adds BOS: otherwise the bridge re-loads the tokenizer
    from its ``name_or_path`` (the hub) with ``add_bos_token=True``. Only that flag of
    ``init_kwargs`` changes; encoding is the native tokenizer's (SmolLM2 adds no BOS)."""
    boot = copy.copy(tokenizer)
    boot.init_kwargs = {"name_or_path": getattr(tokenizer, "name_or_path", ""),
                        **tokenizer.init_kwargs, "add_bos_token": True}
    return boot


def boot_hub(name: str, *, device: str = "cpu") -> Any:
    """A ``TransformerBridge`` of a Hugging Face hub model (needs hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    from geomlens.errors import UnknownModelError

    try:
        bridge = TransformerBridge.boot_transformers(name, device=device, dtype=torch.float32)
    except (OSError, ConnectionError) as exc:
        raise UnknownModelError(f"{name!r}: weights could not be fetched from the Hugging Face "
                                f"hub ({type(exc).__name__}).") from None
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return bridge.eval()


def _hf_config(model: Any) -> Any:
    return model.original_model.config


class BridgeView(ModelView):
    """``W_E`` is the embedding as added to the residual stream: the raw HF weight times the
    embedding module's ``embed_scale`` where it has one (Gemma: √d_model)."""

    backend = "tl4"

    @property
    def embed_scale(self) -> float:
        """The embedding module's ``embed_scale`` (Gemma: √d_model), else 1."""
        module = self.model.original_model.get_input_embeddings()
        scale = getattr(module, "embed_scale", None)
        return float(scale) if scale is not None else 1.0

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        raw, scale = self.model.W_E, self.embed_scale
        if scale == 1.0:
            return raw
        key = (raw.data_ptr(), raw._version, scale)  # one scaled copy per weight version
        held = self.model.__dict__.get("_geomlens_scaled_W_E")
        if held is None or held[0] != key:
            held = (key, (raw * scale).detach())
            self.model.__dict__["_geomlens_scaled_W_E"] = held
        return held[1]

    def _hf_attn(self, layer: int) -> Any:
        return self.model.blocks[layer].attn.original_component

    @property
    def softcap(self) -> float | None:
        """The Hugging Face config's ``final_logit_softcapping`` (the bridge runs its head)."""
        cap = getattr(_hf_config(self.model), "final_logit_softcapping", None)
        return float(cap) if cap is not None and cap > 0 else None

    @property
    def qk_norm(self) -> bool:
        """From the modules (the bridge's cfg does not set ``use_qk_norm``)."""
        return "k_norm" in self.model.blocks[0].attn.submodules

    def k_norm(self, layer: int) -> nn.Module | None:
        return self.model.blocks[layer].attn.k_norm if self.qk_norm else None

    def q_norm(self, layer: int) -> nn.Module | None:
        return self.model.blocks[layer].attn.q_norm if self.qk_norm else None

    def normed_heads(self, x: Tensor, batch: int, pos: int) -> Float[Tensor, "batch pos head_index d_head"]:
        """The bridge normalises ``[batch, head_index, pos, d_head]`` (after the transpose)."""
        return x.transpose(1, 2)

    def attn_scale(self, layer: int) -> float:
        """1 / the Hugging Face module's ``scaling`` (which multiplies the scores)."""
        attn = self._hf_attn(layer)
        return 1.0 / float(getattr(attn, "scaling", attn.head_dim ** -0.5))

    @property
    def attn_softcap(self) -> float | None:
        cap = getattr(_hf_config(self.model), "attn_logit_softcapping", None)
        return float(cap) if cap is not None and cap > 0 else None

    @property
    def block_layout(self) -> str:
        from transformer_lens.model_bridge.generalized_components.block import BlockBridge

        block = self.model.blocks[0]
        subs = block.submodules
        if type(block) is not BlockBridge or "ln1" not in subs or "ln2" not in subs:
            return "other"
        return "sandwich" if "ln1_post" in subs and "ln2_post" in subs else "pre_norm"

    def norm_gain(self, layer: int, name: str) -> Float[Tensor, "d_model"]:
        """The wrapped module's ``weight``, plus 1 where the model stores w for 1 + w (Gemma:
        ``cfg.rmsnorm_uses_offset``, the flag the bridge's own norm reads)."""
        norm = getattr(self.model.blocks[layer], name)
        hf = norm.original_component
        if isinstance(hf, nn.LayerNorm) or getattr(hf, "bias", None) is not None:
            raise InputError(f"{name} is a {type(hf).__name__}; only RMSNorm gains are read.")
        offset = bool(getattr(self.cfg, "rmsnorm_uses_offset", False))
        return hf.weight + 1.0 if offset else hf.weight

    def attn_types(self) -> list[str]:
        """From the Hugging Face config's ``layer_types`` (``sliding_attention`` is local)."""
        types = getattr(_hf_config(self.model), "layer_types", None) or ["full_attention"] * self.n_layers
        return ["local" if "sliding" in t else "global" for t in types]

    def rotary_bases(self) -> list[float | None]:
        hc = _hf_config(self.model)
        rope = getattr(hc, "rope_parameters", None) or {}
        types = getattr(hc, "layer_types", None) or ["full_attention"] * self.n_layers
        if rope and all(isinstance(v, dict) for v in rope.values()):  # per attention type
            return [float(rope[t]["rope_theta"]) for t in types]
        theta = rope.get("rope_theta", getattr(hc, "rope_theta", None))
        return [None if theta is None else float(theta)] * self.n_layers

    def processing(self) -> dict[str, Any]:
        return {"fold_ln": False, "center_writing_weights": False, "center_unembed": False,
                "compatibility_mode": "no_processing"}


def embed_scale_ok(view: BridgeView) -> bool:
    """Gemma's scale is √d_model (a check for the tests)."""
    return math.isclose(view.embed_scale, math.sqrt(view.d_model), rel_tol=1e-3)
