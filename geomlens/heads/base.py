"""The LM-head interface: a module that replaces ``model.unembed`` of a HookedTransformer.

Every head maps the final (normalised) residual ``h`` to logits over the vocabulary and keeps
TransformerLens's hook points, so ``run_with_cache`` still records ``unembed.hook_in`` and
``unembed.hook_out`` and hooks on them still act:

    residual -> hook_in -> logits(h) -> hook_out

The KNN / kernel heads score token v by its distance d_v = ‖h − e_v‖ to row v of the model's
*own* ``embed.W_E``. That matrix is shared, not copied: the head keeps a plain reference to the
``Embed`` module (outside ``_modules``), so it is neither a second parameter nor a second
state-dict entry, and `Head.n_params` counts only what the head itself adds.

Scale convention. After the final RMSNorm (unit weights at init) ‖h‖ = sqrt(d_model), and the
embedding rows are small (std ``initializer_range``), so at initialisation every distance is
close to ``typical_distance() = sqrt(d_model + mean ‖e_v‖²)``. Heads whose logits are −d·scale
initialise the scale to ``sqrt(d_model)``: then the logit *differences* between tokens
(≈ scale · h·e_v / ‖h‖) have the same size as those of the linear head W_U h, whose weights have
the same std as W_E.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig


class Head(nn.Module):
    """Base class of every LM head; subclasses implement `logits`."""

    #: True for heads whose own parameters are "kernel" parameters (σ_v, f, context MLP, b_v),
    #: which the trainer puts in a separate optimizer group (``kernel_lr``, ``kernel_weight_decay``).
    kernel_group: bool = True
    #: True if the head has per-token scales that `set_token_prior` can initialise from frequency.
    has_token_scales: bool = False

    def __init__(self, cfg: HookedTransformerConfig, embed: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        # Shared reference, deliberately not a submodule (see module docstring).
        self.__dict__["_embed"] = embed
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab]

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        """The model's token embedding (shared)."""
        return self.__dict__["_embed"].W_E

    def forward(
        self, residual: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_vocab"]:
        h = self.hook_in(residual)
        return self.hook_out(self.logits(h))

    def logits(self, h: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        raise NotImplementedError

    def n_params(self) -> int:
        """Parameters owned by the head (the shared W_E is not counted)."""
        return sum(p.numel() for p in self.parameters())

    def kernel_parameters(self) -> list[nn.Parameter]:
        """Parameters that go in the trainer's kernel group (all own ones for kernel heads)."""
        return list(self.parameters()) if self.kernel_group else []

    def typical_norm(self) -> float:
        """‖h‖ of an RMS-normalised residual with unit norm weights: sqrt(d_model)."""
        return math.sqrt(self.cfg.d_model)

    @torch.no_grad()
    def typical_distance(self) -> float:
        """sqrt(d_model + mean_v ‖e_v‖²): the distance from a random unit-RMS h to an embedding
        row at initialisation (h and e_v nearly orthogonal)."""
        e_sq = (self.W_E.float() ** 2).sum(-1).mean()
        return math.sqrt(self.cfg.d_model + float(e_sq))

    def set_token_prior(self, log_prior: Float[Tensor, "d_vocab"]) -> bool:
        """Initialise per-token scales so that, at the typical distance, the head outputs the
        unigram distribution ``softmax(log_prior)``. Returns False if the head has no
        per-token scales (the call then changes nothing)."""
        return False

    def extra_repr(self) -> str:
        return f"d_model={self.cfg.d_model}, d_vocab={self.cfg.d_vocab}, n_params={self.n_params()}"
