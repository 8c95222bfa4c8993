"""The detail panel's movers: the heads and MLP neurons of one block that pushed h at one
position most toward the model's final top-1 prediction, each with its projected top tokens.

This is `geomlens.projection.attribution.step_attribution` (the movement view joined with the
parameter projection), ranked by ``push`` = u · W_U[:, t] / ‖W_U[:, t]‖, t = the final top-1.
Architectures it cannot split (post-norm, parallel blocks) give an ``error`` string instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from geomlens.errors import InputError
from geomlens.projection.attribution import attribution_from_run, step_attribution

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import ActivationCache, HookedTransformer

FIELDS = ("component", "head", "neuron", "push", "step_share", "top_tokens")


def movers(
    model: HookedTransformer, tokens: torch.Tensor, *, pos: int, layers: list[int], top: int = 5,
    n_tokens: int = 5, run: tuple[torch.Tensor, ActivationCache] | None = None,
) -> dict[int, dict[str, Any]]:
    """layer -> {"rows": the ``top`` parts by push, best first (`FIELDS`)} or {"error": why}.
    ``run``: (logits [pos, d_vocab], cache) of a forward pass of ``tokens`` that cached
    `geomlens.projection.attribution.attribution_hooks` (None: one is made)."""
    try:
        if run is None:
            table = step_attribution(model, tokens.reshape(1, -1), pos=pos, layers=layers, top=top,
                                     n_tokens=n_tokens)
        else:
            table = attribution_from_run(model, tokens, *run, pos=pos, layers=layers, top=top,
                                         n_tokens=n_tokens, rank_by=("push",))
    except InputError as exc:
        return {layer: {"error": str(exc)} for layer in layers}
    out: dict[int, dict[str, Any]] = {}
    for layer, part in table.groupby("layer"):
        part = part[part["rank_push"] < top].sort_values("rank_push")
        rows = []
        for r in part.itertuples():
            rows.append({
                "component": r.component,
                "head": None if r.head is None or str(r.head) == "<NA>" else int(r.head),
                "neuron": None if r.neuron is None or str(r.neuron) == "<NA>" else int(r.neuron),
                "push": round(float(r.push), 4), "step_share": round(float(r.step_share), 4),
                "top_tokens": r.top_tokens.split(" | "),
            })
        out[int(layer)] = {"rows": rows}
    return out
