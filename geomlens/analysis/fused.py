"""The element-wise part of the analysis, fused: everything that reads a [n_positions, d_vocab]
matrix entry by entry, in as few passes as `torch.compile` (inductor) can fuse.

    reference_terms(logits)            log-sum-exp, p and gain(p)        once per chunk
    score_terms(logits, lse, dot, ...) JSD of every score, rank keys      once per (hidden,
                                                                          target) and chunk

Both build on the shared definitions (the distance kernel's `sq_distance_from_dot`, the score
registry, `js_divergence_fast`, the gain registry), so the fused and the eager results are the
same function evaluated with a different summation order (tested). `Fused` runs them compiled
when asked and falls back to eager (with one warning) when compilation is unavailable.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.geometry.distances import sq_distance_from_dot
from geomlens.geometry.scores import ScoreParts, get_score
from geomlens.metrics.divergence import js_divergence_fast
from geomlens.metrics.ranking import get_gain

logger = logging.getLogger(__name__)


def reference_terms(
    logits: Float[Tensor, "n_positions d_vocab"], gain: str
) -> tuple[Float[Tensor, "n_positions 1"], Float[Tensor, "n_positions d_vocab"],
           Float[Tensor, "n_positions d_vocab"]]:
    """``(lse, p, gains)``: log Σ exp(logits), p = softmax(logits), gain(p)."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    p = torch.exp(logits - lse)
    return lse, p, get_gain(gain)(p)


def parts_from_dot(
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"],
    eps: float,
) -> ScoreParts:
    """The `ScoreParts` every score of the analysis derives from, given ``dot`` = h·e, ‖h‖²
    and ‖e‖² (the squared distances by `sq_distance_from_dot`)."""
    sq = sq_distance_from_dot(dot, h_sq, e_sq)
    return ScoreParts(dot=dot, sq_dist=sq, h_norm=h_sq[:, 0].sqrt(), e_norm=e_sq.sqrt(), eps=eps)


def score_terms(
    logits: Float[Tensor, "n_positions d_vocab"],
    lse: Float[Tensor, "n_positions 1"],
    dot: Float[Tensor, "n_positions d_vocab"],
    h_sq: Float[Tensor, "n_positions 1"],
    e_sq: Float[Tensor, "d_vocab"],
    names: tuple[str, ...],
    groups: tuple[str, ...],
    eps: float,
    base: str,
    dot_is_logits: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """JSD(p ‖ q) of every score in ``names`` and the rank key of every group in ``groups``.

    ``dot`` = h·e; ``dot_is_logits`` says it *is* the LM logits (tied head, b_U = 0, h =
    ln_final): then the dot score's q is p itself and its JSD is exactly 0.
    Returns ``({score: jsd [n]}, {group: key [n, d_vocab]})``."""
    logp = logits - lse
    p = torch.exp(logp)
    parts = parts_from_dot(dot, h_sq, e_sq, eps)
    jsd: dict[str, Tensor] = {}
    for name in names:
        spec = get_score(name)
        if dot_is_logits and name == "dot":
            jsd[name] = torch.zeros_like(lse[:, 0])
            continue
        jsd[name] = js_divergence_fast(p, logp, spec.q_logits(spec.score(parts)), base=base)
    keys = {group: get_score(_group_member(group, names)).ranking(parts) for group in groups}
    return jsd, keys


def _group_member(group: str, names: tuple[str, ...]) -> str:
    return next(n for n in names if (get_score(n).rank_group or n) == group)


@contextmanager
def _untyped():
    """jaxtyping's runtime shape checks (on under pytest) cannot run inside a torch.compile
    trace: switch them off for the compiled call (the eager path is checked)."""
    try:
        from jaxtyping import config
    except ImportError:
        yield
        return
    before = config.jaxtyping_disable
    config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        config.update("jaxtyping_disable", before)


class Fused:
    """Calls the kernels above compiled (``enabled``) or eagerly; a failed compilation (no C++
    compiler, an unsupported backend) switches to eager for the rest of the process."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._compiled: dict[Callable, Callable] = {}

    def __call__(self, fn: Callable, *args):
        if not self.enabled:
            return fn(*args)
        compiled = self._compiled.get(fn)
        if compiled is None:
            compiled = self._compiled[fn] = torch.compile(fn, dynamic=False)
        for a in args:  # one kernel for every chunk size
            if isinstance(a, Tensor) and a.dim() == 2 and a.shape[0] > 1:
                torch._dynamo.maybe_mark_dynamic(a, 0)
        try:
            with _untyped():
                return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure means "run eagerly"
            logger.warning("torch.compile unavailable (%s: %s); running eagerly",
                           type(exc).__name__, exc)
            self.enabled = False
            return fn(*args)
