"""The changes a click can make, as forward hooks of the existing threads:

    attn / mlp      zero or mean ablation of ``blocks.{l}.hook_attn_out`` / ``hook_mlp_out``
                    (`geomlens.ablation.ablate.ablation_hooks`: mean = the mean over the
                    sequence's positions)
    kv_first        every layer from ``l`` on attends to layer 0's keys and values
                    (`geomlens.kv.patch.kv_hooks`, mode ``all``); ``method`` is unused

`Intervention.hooks(model, n_pos)` returns ``(fwd_hooks, module_hooks)`` for one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from geomlens.ablation.ablate import METHODS, ablation_hooks
from geomlens.errors import InputError
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import kv_hooks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

TARGETS = {"attn": "attn_out", "mlp": "mlp_out", "kv_first": None}
"""Intervention target -> ablation component (None: the first-layer K/V patch)."""


@dataclass(frozen=True)
class Intervention:
    target: str
    layer: int
    method: str = "zero"

    @classmethod
    def from_message(cls, msg: dict[str, Any], n_layers: int) -> Intervention:
        """Validate a view's request; a bad one is a one-line `InputError`."""
        target, method = msg.get("target"), msg.get("method", "zero")
        if target not in TARGETS:
            raise InputError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
        if target != "kv_first" and method not in ("zero", "mean"):
            raise InputError(f"unknown method {method!r}; choose zero or mean")
        try:
            layer = int(msg.get("layer"))
        except (TypeError, ValueError):
            raise InputError(f"layer must be an integer, got {msg.get('layer')!r}") from None
        low = 1 if target == "kv_first" else 0
        if not low <= layer < n_layers:
            raise InputError(f"layer {layer} is outside {low}..{n_layers - 1} for {target}")
        return cls(target=target, layer=layer, method=method)

    @property
    def label(self) -> str:
        if self.target == "kv_first":
            return f"layer-0 K/V from layer {self.layer} on"
        return f"{self.method} ablation of block {self.layer} {self.target}"

    def hooks(self, model: HookedTransformer, n_pos: int) -> tuple[list, list]:
        if self.target == "kv_first":
            n = model.cfg.n_layers
            lm = LayerMap(tuple(0 if i >= self.layer else i for i in range(n)),
                          spec=f"first from {self.layer}")
            h = kv_hooks(model, lm, "all")
            return list(h.fwd_hooks), list(h.module_hooks)
        METHODS.get(self.method)
        valid = torch.ones(1, n_pos, dtype=torch.bool, device=model.cfg.device)
        return ablation_hooks([self.layer], TARGETS[self.target], self.method, valid), []
