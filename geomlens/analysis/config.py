"""`AnalyzeConfig`: the distance-vs-probability analysis (thesis Table 6.1), one field per knob."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from geomlens.errors import InputError

logger = logging.getLogger(__name__)

HIDDEN_CHOICES: tuple[str, ...] = ("ln_final", "resid_post")
TARGET_CHOICES: tuple[str, ...] = ("W_E", "W_U")
SCORE_CHOICES: tuple[str, ...] = (
    "inv_dist", "softmax_inv_dist", "neg_dist", "neg_sq_dist", "cosine", "dot",
)


@dataclass(kw_only=True)
class AnalyzeConfig:
    """How h is compared with the vocabulary and with the LM head's distribution p."""

    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model` (e.g. smollm2-135m, gemma3-270m)."""
    domains: list[str] | None = None
    """Bundled eval domains to use (None = all five). Ignored when ``texts`` is set."""
    texts: str | None = None
    """A local .jsonl/.txt file of segments instead of the bundled corpus (None = bundled)."""
    n_segments: int | None = None
    """Segments per domain (first ones in file order; None = all)."""
    max_tokens: int = 128
    """Tokens per segment; longer segments are cut (see ``overflow``)."""
    overflow: str = "truncate"
    """What happens to tokens past ``max_tokens``: "truncate" (keep the first) or "window"."""
    batch_size: int = 8
    """Segments per forward pass."""
    hidden: list[str] = field(default_factory=lambda: list(HIDDEN_CHOICES))
    """Which h: "ln_final" = the input of the LM head (``unembed.hook_in``, the final RMSNorm
    output incl. its weight = HF hidden_states[-1]); "resid_post" = the last block's
    ``blocks.{L-1}.hook_resid_post`` (before the final norm)."""
    target: list[str] = field(default_factory=lambda: list(TARGET_CHOICES))
    """Which token vectors: "W_E" (rows of the embedding) and/or "W_U" (columns of W_U)."""
    scores: list[str] = field(default_factory=lambda: list(SCORE_CHOICES))
    """Scores to rank the vocabulary by (see `geomlens.geometry.scores`)."""
    ks: list[int | None] = field(default_factory=lambda: [1, 10, 100, None])
    """NDCG cut-offs; None = the full vocabulary."""
    gain: str = "exp2"
    """NDCG gain of relevance p: "exp2" (2^p − 1, the thesis) or "linear" (p, as sklearn)."""
    jsd_base: str = "nats"
    """Unit of the JSD: "nats" (max ln 2) or "bits" (max 1)."""
    spearman: bool = True
    """Also compute Spearman's rho over the full vocabulary (needs a full sort; slower)."""
    topk_exact: int = 256
    """K: ranks 1..K are exact in NDCG; NDCG@full is bounded beyond (error in summary.json)."""
    eps: float = 1e-6
    """Added to the distance in inv_dist and softmax_inv_dist (1/(0+eps) stays finite)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of segments for the 95% CIs."""
    n_permutations: int = 20
    """Permutations of the target rows for the permutation test (0 = no test)."""
    controls: bool = True
    """Run the controls (permutation test and random-matrix control)."""
    control_positions: int | None = 512
    """The controls use the first this-many positions of the stream (None = all positions);
    the observed value they are compared with is recomputed on the same positions."""
    trajectories: bool = True
    """Also compute the per-layer trajectory table (`geomlens.geometry.trajectory`)."""
    trajectory_segments: int | None = None
    """Compute trajectories only for the first this-many segments (None = all; they need a
    second forward pass and a per-layer lens, which costs more than the analysis itself)."""
    position_chunk: int | None = None
    """Positions scored at once (None = as many as fit in ~2^24 vocab entries)."""
    keep_per_token: bool = False
    """Keep the per-token table in memory (for notebooks/tests); files stream it anyway."""
    device: str | None = None
    """Torch device (None = cuda if available, else cpu)."""
    seed: int = 0
    """Seeds the permutations, the random matrix and the bootstrap."""

    def __post_init__(self) -> None:
        def check(name: str, values: list, allowed: tuple[str, ...]) -> None:
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise InputError(f"{name} must be a non-empty list from {allowed}; got {values}")

        check("hidden", list(self.hidden), HIDDEN_CHOICES)
        check("target", list(self.target), TARGET_CHOICES)
        check("scores", list(self.scores), SCORE_CHOICES)
        if self.gain not in ("exp2", "linear"):
            raise InputError(f"gain must be 'exp2' or 'linear', not {self.gain!r}")
        if self.jsd_base not in ("nats", "bits"):
            raise InputError(f"jsd_base must be 'nats' or 'bits', not {self.jsd_base!r}")
        if self.overflow not in ("truncate", "window"):
            raise InputError(f"overflow must be 'truncate' or 'window', not {self.overflow!r}")
        finite = [k for k in self.ks if k is not None]
        if any(k < 1 for k in finite):
            raise InputError(f"ks must be positive (or None for full); got {self.ks}")
        if finite and self.topk_exact < max(finite):
            raise InputError(f"topk_exact={self.topk_exact} must be >= the largest k {max(finite)}")
        for name in ("max_tokens", "batch_size", "topk_exact", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1")
        if self.n_permutations < 0:
            raise InputError("n_permutations must be >= 0")
        if self.eps <= 0:
            raise InputError("eps must be > 0 (it keeps 1/(d+eps) finite at d = 0)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnalyzeConfig:
        """Build from plain values; unknown keys are logged and ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            logger.warning("AnalyzeConfig: ignoring unknown keys %s", unknown)
        return cls(**{k: v for k, v in d.items() if k in known})
