"""The small metrics an ablation reports per batch.

next-token loss
    mean cross-entropy of the next token over valid positions ``pos < length - 1``.
distance-vs-probability agreement (at every valid position)
    h = ``unembed.hook_in``: the output of the final norm *including* its weight, i.e. exactly
    what the LM head multiplies (= HF ``hidden_states[-1]``; the same default h as
    `geomlens analyze --hidden ln_final`). Note ``ln_final.hook_normalized`` is taken before
    the RMSNorm weight in TransformerLens, so it is not that vector. Tokens are ranked by ``-||h - e_t||`` (``e_t`` = rows of W_E) and compared with the
    LM distribution ``p = softmax(logits)``:

    ndcg@k       NDCG of the distance ranking with graded relevance ``p_t`` and gain
                 ``2^p - 1``: DCG@k = sum_{i<k} (2^{p_(i)} - 1) / log2(i + 2), divided by the
                 DCG@k of the ranking by ``p`` itself (1 = the k nearest embeddings are the k
                 most probable tokens, in order). Computed by `geomlens.metrics.ranking.ndcg_at_k`.
    top1_agree   1 if the nearest embedding is the arg-max of ``p``, else 0.

Squared distances come from the shared kernel `geomlens.geometry.distances`, in vocabulary
chunks (never ``[n_positions, d_vocab, d_model]``); the ``[n_positions, d_vocab]`` score matrix
has the size of the logits the forward pass already holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.geometry.distances import sq_distances
from geomlens.metrics.ranking import ndcg_at_k


def next_token_ce(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"],
) -> tuple[float, int]:
    """(sum of next-token cross-entropies over valid positions, number of those positions)."""
    pos = torch.arange(tokens.shape[1] - 1, device=tokens.device)
    has_next = pos[None, :] < (lengths[:, None] - 1)
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    ce = ce.view(tokens.shape[0], -1)
    return float(ce[has_next].sum()), int(has_next.sum())


def agreement(
    h: Float[Tensor, "n_positions d_model"],
    logits: Float[Tensor, "n_positions d_vocab"],
    W_E: Float[Tensor, "d_vocab d_model"],
    *,
    k: int = 10,
    chunk_size: int = 8192,
) -> tuple[Float[Tensor, "n_positions"], Float[Tensor, "n_positions"]]:
    """Per-position (ndcg@k, top1_agree) between ``-||h - W_E||`` and ``softmax(logits)``.

    The squared distance orders tokens exactly like the distance, so ``-||h - e||^2`` is used.
    """
    scores = sq_distances(h.float(), W_E, vocab_chunk=chunk_size).neg_()
    p = logits.float().softmax(-1)
    ndcg = ndcg_at_k(scores, p, k=k, gain="exp2")
    top1 = (scores.argmax(-1) == p.argmax(-1)).float()
    return ndcg, top1
