"""`AnalyzeConfig`: the distance-vs-probability analysis (thesis Table 6.1), one field per knob.

Its flags (`geomlens analyze --help`) are generated from these fields; the text-source fields
(``--domains | --texts``, ``--n-segments``, ``--max-tokens``, ``--overflow``) come from
`geomlens.data.source.TextSource`, and the choices of ``scores`` and ``gain`` from their
registries (`geomlens.geometry.scores.SCORES`, `geomlens.metrics.ranking.GAINS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geomlens.config.base import choices
from geomlens.data.source import TextSource
from geomlens.errors import InputError

HIDDEN_CHOICES: tuple[str, ...] = ("ln_final", "resid_post")
TARGET_CHOICES: tuple[str, ...] = ("W_E", "W_U")
DTYPE_CHOICES: tuple[str, ...] = ("float32", "bfloat16")
SCORES = "geomlens.geometry.scores:SCORES"
GAINS = "geomlens.metrics.ranking:GAINS"


def _all_scores() -> list[str]:
    from geomlens.config.base import resolve_choices

    return list(resolve_choices(SCORES))


@dataclass(kw_only=True)
class AnalyzeConfig(TextSource):
    """How h is compared with the vocabulary and with the LM head's distribution p."""

    model: str = "smollm2-135m"
    """Model name for `geomlens.models.load_model` (e.g. smollm2-135m, gemma3-270m)."""
    batch_size: int = 8
    """Segments per forward pass."""
    hidden: list[str] = field(default_factory=lambda: list(HIDDEN_CHOICES),
                              metadata=choices(HIDDEN_CHOICES))
    """Which h: "ln_final" = the input of the LM head (``unembed.hook_in``, the final RMSNorm
    output incl. its weight = HF hidden_states[-1]); "resid_post" = the last block's
    ``blocks.{L-1}.hook_resid_post`` (before the final norm)."""
    target: list[str] = field(default_factory=lambda: list(TARGET_CHOICES),
                              metadata=choices(TARGET_CHOICES))
    """Which token vectors: "W_E" (rows of the embedding) and/or "W_U" (columns of W_U)."""
    scores: list[str] = field(default_factory=_all_scores, metadata={**choices(SCORES), "aliases": ("--score",)})
    """Scores to rank the vocabulary by (default: every registered score)."""
    ks: list[int | None] = field(default_factory=lambda: [1, 10, 100, None],
                                 metadata={"none_token": "full"})
    """NDCG cut-offs; None (on the command line: full) = the whole vocabulary."""
    gain: str = field(default="exp2", metadata=choices(GAINS))
    """NDCG gain applied to the relevance p."""
    jsd_base: str = field(default="nats", metadata=choices(("nats", "bits")))
    """Unit of the JSD: "nats" (max ln 2) or "bits" (max 1)."""
    spearman: bool = True
    """Also compute Spearman's rho over the full vocabulary (one full sort per rank group and
    position, so it is computed on a sample of positions: see ``spearman_positions``)."""
    spearman_positions: int | None = 512
    """Spearman's rho is averaged over this many positions, drawn uniformly without
    replacement from all positions of the run (seeded by ``seed``); None = every position
    (the exact mode). Its CI then includes the sampling (see summary.json definitions)."""
    topk_exact: int = 256
    """K: ranks 1..K are exact in NDCG; NDCG@full is bounded beyond (error in summary.json)."""
    eps: float = 1e-6
    """Added to the distance in inv_dist and softmax_inv_dist (1/(0+eps) stays finite)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of segments for the 95% CIs."""
    n_permutations: int = 1023
    """Permutations of the target rows for the permutation test of the rank metrics (0 = no
    test); with 1023 the smallest p-value is 1/1024 < 0.001. They cost less than the forward
    pass over the control positions (`geomlens.analysis.permutation`)."""
    controls: bool = True
    """Run the controls (permutation test and random-matrix control)."""
    control_positions: int | None = 512
    """The controls use the first this-many positions of the stream (None = all positions);
    the observed value they are compared with is recomputed on the same positions."""
    calibrate: bool = True
    """Fit one temperature per (hidden, target, score) on a calibration split of the segments
    and report the calibrated JSD on the other segments, plus the uniform reference
    JSD(p || uniform) (`geomlens.analysis.calibration`); a fixed cost set by the two sample
    sizes below."""
    calibration_fraction: float = 0.25
    """Fraction of the segments (seeded by ``seed``; at least 1, and 1 left) whose positions
    fit the temperatures; the rest evaluate the calibrated JSD."""
    calibration_positions: int | None = 256
    """The temperatures are fitted on this many positions drawn uniformly without replacement
    from the calibration segments (None = all of their positions, the exact mode)."""
    calibration_eval_positions: int | None = 1024
    """The calibrated JSD is evaluated on this many positions drawn uniformly without
    replacement from the other segments (None = all of their positions, the exact mode)."""
    trajectories: bool = True
    """Also compute the per-layer trajectory table (`geomlens.geometry.trajectory`)."""
    trajectory_segments: int | None = None
    """Compute trajectories only for the first this-many segments (None = all; they need a
    second forward pass and a per-layer lens, which costs more than the analysis itself)."""
    layer_lens: bool = True
    """Also rank the vocabulary at every layer with the distance lenses and the logit lens and
    compare with p by NDCG@10 and NDCG@full (layers.csv, figures/layers.png;
    `geomlens.analysis.layers`)."""
    layer_lens_positions: int | None = 256
    """The layer lens scores this many positions, drawn uniformly without replacement from all
    positions of the run (seeded by ``seed``); None = every position (its cost grows as
    positions x layers x 2 (tied embeddings) or 3 vocabulary-sized matmuls)."""
    position_chunk: int | None = None
    """Positions scored at once (None = as many as fit in 2^22 vocab entries)."""
    compile: bool | None = None
    """Fuse the element-wise work with torch.compile (None = when the run has >= 2048
    positions; falls back to eager, with the same numbers, when compilation is unavailable)."""
    keep_per_token: bool = False
    """Keep the per-token table in memory (for notebooks/tests); files stream it anyway."""
    device: str | None = None
    """Torch device (None = cuda if available, else cpu)."""
    dtype: str = field(default="float32", metadata=choices(DTYPE_CHOICES))
    """The forward pass: "float32", or "bfloat16" = its matmuls under bf16 autocast (tensor
    cores on a GPU; residual stream, norms and softmax stay float32, as do the weights).
    Hidden states, target matrices, logits, distances, scores and ranks are float32 either way;
    on smollm2 the NDCG means agree with float32 within 1e-3 (tests). A model already loaded
    in bfloat16 (half the weight memory) is analyzed the same way, from its rounded weights."""
    seed: int = 0
    """Seeds the permutations, the random matrix and the bootstrap."""

    def validate(self) -> None:
        super().validate()
        finite = [k for k in self.ks if k is not None]
        if not self.ks or any(k < 1 for k in finite):
            raise InputError(f"--ks must be positive integers or full; got {self.ks}")
        if finite and self.topk_exact < max(finite):
            raise InputError(f"--topk-exact {self.topk_exact} must be >= the largest k {max(finite)}")
        if self.layer_lens_positions is not None and self.layer_lens_positions < 1:
            raise InputError("--layer-lens-positions must be >= 1 (or None for every position)")
        if self.spearman_positions is not None and self.spearman_positions < 1:
            raise InputError("--spearman-positions must be >= 1 (or None for every position)")
        for name in ("batch_size", "topk_exact", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise InputError("--calibration-fraction must be in (0, 1) (it splits the segments "
                             "into calibration and evaluation segments)")
        for name in ("calibration_positions", "calibration_eval_positions"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1 (or None for every "
                                 "position)")
        if self.n_permutations < 0:
            raise InputError("--n-permutations must be >= 0")
        if self.eps <= 0:
            raise InputError("--eps must be > 0 (it keeps 1/(d+eps) finite at d = 0)")
