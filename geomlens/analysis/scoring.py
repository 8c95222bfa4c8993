"""Scoring: for a chunk of positions, every (hidden, target) pair is compared once with the whole
vocabulary: one matmul for h·e (none when h = ln_final and the target is the tied unembedding:
h·e are then the LM logits the forward already computed), from which every score is derived
and reduced at once to per-position metrics against p (`geomlens.analysis.agreement.pair_metrics`).

Controls (on the first ``control_positions`` positions of the stream):
    permutation    the rows of the target matrix are shuffled (``score[:, perm]``), n times: the
                   rank metrics of every permutation from the observed top-K and tail buckets
                   (`geomlens.analysis.permutation`; JSD and Spearman left out);
    random_matrix  a Gaussian matrix with the target's shape and row-norm distribution;
    observed       the real metric on exactly the same positions, for the p-value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from geomlens.analysis.agreement import Metrics, Reference, ScoredPair, pair_metrics, reference
from geomlens.analysis.capture import CapturedBatch
from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.permutation import PermutationNull
from geomlens.backend import view_of
from geomlens.fused import Fused
from geomlens.geometry.distances import row_sq_norms
from geomlens.metrics.stats import random_matrix_like
from geomlens.models.weights import weights_tied

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def target_matrices(
    model: HookedTransformer, names: Sequence[str]
) -> tuple[dict[str, Float[Tensor, "d_vocab d_model"]], dict[str, str]]:
    """The requested target matrices (one token vector per row) and aliases.

    Returns ``(matrices, alias)`` where ``alias[name]`` is the name whose results ``name``
    reuses: W_U is aliased to W_E when W_U.T equals W_E exactly (tied, unprocessed weights).
    """
    view = view_of(model)
    full = {"W_E": view.W_E.detach().float(), "W_U": view.W_U.detach().T.float()}
    alias = {name: name for name in names}
    if "W_E" in names and "W_U" in names and weights_tied(model):
        alias["W_U"] = "W_E"
    return {name: full[name] for name in names if alias[name] == name}, alias


def is_unembedding(model: HookedTransformer, matrix: Float[Tensor, "d_vocab d_model"]) -> bool:
    """True when h·e with this matrix *is* the LM logits for h = ln_final: the matrix equals
    W_U.T bitwise, b_U is 0, the logits are not soft-capped and the model computes in float32
    (checked once per run)."""
    view = view_of(model)
    W_U = view.W_U.detach()
    return (W_U.dtype == torch.float32 and view.softcap is None and matrix.shape == W_U.T.shape
            and bool((view.b_U == 0).all()) and _is_W_U_T(model, matrix))


def _is_W_U_T(model: HookedTransformer, matrix: Tensor) -> bool:
    """matrix == W_U.T exactly; a matrix that is W_E (or W_U) itself is answered by the cached
    `weights_tied`, without comparing 2 × d_vocab × d_model numbers again."""
    W_E, W_U = view_of(model).W_E, view_of(model).W_U
    if matrix.device == W_E.device and matrix.data_ptr() == W_E.data_ptr() \
            and matrix.stride() == W_E.stride():
        return weights_tied(model)
    if matrix.device == W_U.device and matrix.data_ptr() == W_U.data_ptr() \
            and matrix.stride() == W_U.T.stride():
        return True
    return torch.equal(matrix, W_U.T.to(matrix.device))


@dataclass
class Targets:
    """The distinct target matrices on the model's device, with their row norms."""

    matrices: dict[str, Float[Tensor, "d_vocab d_model"]]
    """One entry per distinct matrix (aliases left out)."""
    sq_norms: dict[str, Float[Tensor, "d_vocab"]]
    """‖e_v‖² of each matrix's rows."""
    alias: dict[str, str]
    """Requested name -> the name in ``matrices`` whose results it reuses."""
    requested: list[str]
    """The requested names, in request order."""
    unembedding: dict[str, bool] = field(default_factory=dict)
    """Name in ``matrices`` -> True when its dot products with ln_final are the LM logits
    (`is_unembedding`): the analysis reuses the forward's logits instead of a matmul."""

    @classmethod
    def load(cls, model: HookedTransformer, names: Sequence[str], device) -> Targets:
        mats, alias = target_matrices(model, names)
        mats = {name: mat.to(device) for name, mat in mats.items()}
        sq_norms = {name: row_sq_norms(mat) for name, mat in mats.items()}
        tied = {name: is_unembedding(model, mat) for name, mat in mats.items()}
        return cls(mats, sq_norms, alias, list(names), tied)

    def reuses_logits(self, hidden: str, target: str) -> bool:
        return hidden == "ln_final" and self.unembedding.get(target, False)

    def requested_as(self, target: str) -> list[str]:
        """The requested names (in request order) whose results are ``target``'s."""
        return [name for name in self.requested if self.alias[name] == target]


@dataclass
class ControlPlan:
    """The control draws (fixed for the whole run) and which positions get controls."""

    null: PermutationNull | None = None
    """Collects the control rows for the permutation test (None: no permutations)."""
    random_matrices: dict[str, Tensor] = field(default_factory=dict)
    random_sq_norms: dict[str, Tensor] = field(default_factory=dict)
    """‖row‖² of each random matrix (computed once, not per chunk)."""
    limit: float = 0.0
    """Positions of the stream (from its start) that get controls."""

    @classmethod
    def create(cls, cfg: AnalyzeConfig, targets: Targets, d_vocab: int, device) -> ControlPlan:
        if not cfg.controls:
            return cls()
        null = (PermutationNull(cfg.n_permutations, seed=cfg.seed, ks=cfg.ks)
                if cfg.n_permutations else None)
        randoms = {name: random_matrix_like(mat, seed=cfg.seed + 1 + i)
                   for i, (name, mat) in enumerate(targets.matrices.items())}
        limit = float("inf" if cfg.control_positions is None else cfg.control_positions)
        return cls(null, randoms, {name: row_sq_norms(m) for name, m in randoms.items()}, limit)

    def n_control(self, first: int, n_positions: int) -> int:
        """How many of the ``n_positions`` positions from stream index ``first`` on get
        controls (the stream's first ``limit`` positions do)."""
        return int(max(0.0, min(n_positions, self.limit - first)))


@dataclass
class ScoredChunk:
    """The metrics of one (hidden, target) pair on positions ``start:stop`` of a batch."""

    start: int
    stop: int
    hidden: str
    target: str
    metrics: Metrics
    controls: list[tuple[str, str, int, dict[str, Tensor]]]
    """(score, variant, index, metrics) of the controls, on the chunk's first positions."""


MATMUL_ROWS = 256
"""h·e is computed for at least this many positions at once and sliced per chunk: a
[n, d_model] @ [d_model, d_vocab] product reads the whole target matrix, and below ~256 rows
that read, not the arithmetic, sets its time (gemma3-270m, 2 threads: 16 rows at a time take
3.2x as long per row as 256, 64 rows 1.6x)."""


@dataclass
class DotBlocks:
    """h·e of each (hidden, target) pair over blocks of ``rows`` positions, sliced per chunk
    (one block per pair alive at a time)."""

    hidden: dict[str, Float[Tensor, "n_positions d_model"]]
    matrices: dict[str, Float[Tensor, "d_vocab d_model"]]
    rows: int
    _blocks: dict[tuple[str, str], tuple[int, Tensor]] = field(default_factory=dict)

    def get(self, hidden: str, target: str, start: int, stop: int) -> Float[Tensor, "n d_vocab"]:
        """h·e at positions ``start:stop`` (within one block: chunks tile the blocks)."""
        cached = self._blocks.get((hidden, target))
        if cached is None or not cached[0] <= start < stop <= cached[0] + len(cached[1]):
            self._blocks.pop((hidden, target), None)  # free the old block first
            h = self.hidden[hidden][start:start + self.rows]
            cached = self._blocks[(hidden, target)] = (start, h @ self.matrices[target].T)
        first, block = cached
        return block[start - first:stop - first]


def score_batch(
    batch: CapturedBatch, targets: Targets, cfg: AnalyzeConfig, plan: ControlPlan,
    *, position_chunk: int, fused: Fused, spearman_rows: Tensor | None = None,
    stream_start: int = 0,
) -> Iterator[ScoredChunk]:
    """Score ``position_chunk`` positions at a time: for each chunk, each hidden, each target.
    ``spearman_rows``: the positions of the batch that get Spearman's rho (None: all, when
    ``cfg.spearman``); ``stream_start``: the stream index of the batch's first position (the
    controls go to the stream's first ``control_positions``)."""
    dots = DotBlocks(batch.hidden, targets.matrices, -(-MATMUL_ROWS // position_chunk) * position_chunk)
    for start in range(0, batch.n_positions, position_chunk):
        stop = min(batch.n_positions, start + position_chunk)
        rows = None
        if spearman_rows is not None:
            in_chunk = (spearman_rows >= start) & (spearman_rows < stop)
            rows = spearman_rows[in_chunk] - start
        ref = reference(batch.logits[start:stop], topk=cfg.topk_exact, gain=cfg.gain,
                        spearman=cfg.spearman and spearman_rows is None, spearman_rows=rows,
                        fused=fused)
        n_control = plan.n_control(stream_start + start, stop - start)
        ref_control = ref.head(n_control) if n_control else None
        if n_control and plan.null is not None:
            plan.null.add_reference(ref_control)
        for hidden in cfg.hidden:
            h = batch.hidden[hidden][start:stop]
            h_sq = h.pow(2).sum(-1, keepdim=True)
            for target in targets.matrices:
                reuse = targets.reuses_logits(hidden, target)
                dot = ref.logits if reuse else dots.get(hidden, target, start, stop)
                scored = pair_metrics(ref, dot, h_sq, targets.sq_norms[target], names=cfg.scores,
                                      ks=cfg.ks, eps=cfg.eps, jsd_base=cfg.jsd_base,
                                      dot_is_logits=reuse, fused=fused)
                controls = []
                if n_control:
                    if plan.null is not None:
                        plan.null.add_pair(hidden, target, scored, n_control)
                    controls = list(control_metrics(
                        scored, ref_control, n_control, cfg, h=h[:n_control],
                        random_matrix=plan.random_matrices.get(target),
                        random_sq=plan.random_sq_norms.get(target), fused=fused))
                yield ScoredChunk(start, stop, hidden, target, scored.metrics, controls)
                del dot, scored  # vocabulary-sized: free before the next pair is scored


def control_metrics(
    scored: ScoredPair, ref: Reference, n_positions: int, cfg: AnalyzeConfig, *,
    h: Float[Tensor, "n_positions d_model"], random_matrix: Tensor | None, fused: Fused,
    random_sq: Tensor | None = None,
) -> Iterator[tuple[str, str, int, dict[str, Tensor]]]:
    """``(score, variant, index, metrics)`` of the observed metrics and the random-matrix
    control on the first ``n_positions`` positions of a chunk (Spearman left out; the
    permutations go to `PermutationNull`)."""
    for name, m in scored.metrics.items():
        yield name, "observed", 0, {k: v[:n_positions] for k, v in m.items() if k != "spearman"}
    if random_matrix is not None:
        plain = replace(ref, ranks=None, spearman_rows=None)
        rdot = h @ random_matrix.T
        rscored = pair_metrics(plain, rdot, h.pow(2).sum(-1, keepdim=True),
                               row_sq_norms(random_matrix) if random_sq is None else random_sq,
                               names=cfg.scores, ks=cfg.ks,
                               eps=cfg.eps, jsd_base=cfg.jsd_base, fused=fused)
        for name, m in rscored.metrics.items():
            yield name, "random_matrix", 0, m
