"""Model token ids <-> tokenizer ids, and token ids as printable text.

A model trained with ``vocab_size`` (`geomlens.training.data.TokenData.reduce_vocab`) renumbers
the tokenizer's ids: model id ``i < len(kept)`` is tokenizer id ``kept[i]`` and the last model id
(``oov_id``) stands for every other token. A `TokenMap` holds that table next to the tokenizer so
model ids print as text; models with the tokenizer's own ids get the identity map.

    tm = token_map(model)            # attached by `load_trained`, else built from model.tokenizer
    tm.labels([0, 1, 8191])          # ['.', ',', '<oov>']
    tm.to_original(ids)              # tokenizer ids (−1 for the OOV id)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor, nn

OOV_LABEL = "<oov>"
#: the model attribute `geomlens.models.trained.load_trained` sets
ATTRIBUTE = "geomlens_token_map"


@dataclass(kw_only=True)
class TokenMap:
    """The tokenizer of a model and how its ids relate to the model's ids."""

    tokenizer: Any | None
    """A Hugging Face tokenizer (None = ids print as numbers)."""
    d_vocab: int
    """The model's vocabulary size."""
    kept: Int[Tensor, "n_kept"] | None = None
    """Tokenizer id of each model id ``0..n_kept−1``; None = model ids are tokenizer ids."""
    oov_id: int | None = None
    """The model id that stands for every token not in ``kept``; None = no such id."""

    def to_original(self, ids: Int[Tensor, "n"] | Sequence[int]) -> Int[Tensor, "n"]:
        """Tokenizer ids of model ids (−1 for the OOV id)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if self.kept is None:
            return ids.clone()
        out = torch.full_like(ids, -1)
        ok = ids < len(self.kept)
        out[ok] = self.kept[ids[ok]]
        return out

    def from_original(self, ids: Int[Tensor, "n"] | Sequence[int]) -> Int[Tensor, "n"]:
        """Model ids of tokenizer ids (tokens outside ``kept`` map to ``oov_id``, or −1)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if self.kept is None:
            return torch.where(ids < self.d_vocab, ids, -1)
        table = torch.full((int(max(self.kept.max(), ids.max())) + 1,),
                           -1 if self.oov_id is None else self.oov_id, dtype=torch.long)
        table[self.kept] = torch.arange(len(self.kept))
        return table[ids]

    def shared_ids(self) -> Int[Tensor, "n_shared"]:
        """Model ids that stand for exactly one tokenizer token (all but the OOV id)."""
        n = len(self.kept) if self.kept is not None else self.d_vocab
        return torch.arange(n)

    def labels(self, ids: Int[Tensor, "n"] | Sequence[int]) -> list[str]:
        """Printable text of model ids (``<oov>`` for the OOV id; the id itself without a
        tokenizer)."""
        originals = self.to_original(ids).tolist()
        if self.tokenizer is None:
            return [str(i) if i >= 0 else OOV_LABEL for i in originals]
        return [self.tokenizer.decode([i]) if i >= 0 else OOV_LABEL for i in originals]


def token_map(model: nn.Module) -> TokenMap:
    """The model's `TokenMap` (a HookedTransformer's): the one `load_trained` attached, else the
    identity map over ``model.tokenizer``."""
    attached = getattr(model, ATTRIBUTE, None)
    if isinstance(attached, TokenMap):
        return attached
    return TokenMap(tokenizer=getattr(model, "tokenizer", None), d_vocab=model.cfg.d_vocab)
