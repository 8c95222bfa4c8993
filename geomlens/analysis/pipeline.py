"""Streaming distance-vs-probability analysis over token sequences.

For every valid position of every sequence: one forward pass gives the LM logits (p) and the
hidden states h (`geomlens.analysis.capture`); for each (hidden, target) the dot products and
squared distances to the whole vocabulary are computed once per chunk of positions, every score
is derived from them and reduced at once to per-position scalar metrics, with the controls
(`geomlens.analysis.scoring`); the per-token table of each batch is reduced to per-segment
means, and streamed to parquet when a path is given, before the next batch
(`geomlens.analysis.accumulate`). Nothing vocabulary-sized outlives its chunk, so peak memory
does not grow with the number of segments.

Each batch is computed into a `BatchRecord` (`_AnalysisState.compute`, which depends on the
batch and the run's fixed draws only) and folded into the run's sums in batch order
(`_AnalysisState.fold`). Under torchrun the batches are split over the ranks and rank 0 folds
every record (`geomlens.runner.sharding`), so a sharded run's numbers equal a single process's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from geomlens.analysis.accumulate import Accumulator, ControlSums, TokenTable
from geomlens.analysis.agreement import metric_names
from geomlens.analysis.calibration import CalibrationBatch, CalibrationStore
from geomlens.analysis.capture import CapturedBatch, capture_batch, hidden_hook_names
from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.layers import LayerLensCapture, LensRows
from geomlens.analysis.memory_plan import plan_analysis
from geomlens.analysis.result import AnalysisResult
from geomlens.analysis.sampling import rows_in_batch, sample_sorted, seeded
from geomlens.analysis.scoring import ControlPlan, Targets, score_batch
from geomlens.data.batching import batch_sequences
from geomlens.errors import InputError
from geomlens.fused import Fused
from geomlens.models.load import model_info
from geomlens.runner.distributed import DistInfo
from geomlens.runner.record_log import RecordLog, inputs_digest
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

__all__ = ["AnalysisResult", "analyze_tokens", "hidden_hook_names"]

_VOCAB_BUDGET = 1 << 22
"""Default number of [position, token] entries scored at once (16 MiB per float32 matrix, 84
positions at vocabulary 49,152: large enough that the per-chunk Python work is amortized; the
fused passes read their inputs once each, so the chunk need not fit in cache)."""
COMPILE_MIN_POSITIONS = 2048
"""With ``compile=None``, runs with at least this many positions are fused by torch.compile."""


def _position_chunk(cfg: AnalyzeConfig, model: HookedTransformer, device: torch.device,
                    batch_positions: int) -> int:
    """``cfg.position_chunk``, else what the memory planner fits in the device's free memory
    (`geomlens.analysis.memory_plan`); on the CPU at most 2^22 vocabulary entries."""
    d_vocab = model.cfg.d_vocab_out
    if cfg.position_chunk is not None:
        return max(1, cfg.position_chunk)
    forward = torch.bfloat16 if cfg.dtype == "bfloat16" else next(model.parameters()).dtype
    budget = max(1, _VOCAB_BUDGET // d_vocab)
    try:
        plan = plan_analysis(cfg, d_vocab=d_vocab, d_model=model.cfg.d_model,
                             batch_positions=batch_positions, device=device, forward_dtype=forward)
    except InputError:
        if device.type == "cuda":
            raise
        return budget  # the CPU swaps rather than fails: keep the tuned chunk
    return plan.position_chunk if device.type == "cuda" else min(budget, plan.position_chunk)


def _compile(cfg: AnalyzeConfig, n_positions: int) -> bool:
    """Fuse with torch.compile? ``cfg.compile``, or (None) when the run is large enough to
    repay the one-off compilation (cached on disk afterwards)."""
    if cfg.compile is not None:
        return cfg.compile
    return n_positions >= COMPILE_MIN_POSITIONS


def forward_precision(cfg: AnalyzeConfig, device: torch.device):
    """The context of the forward pass: bf16 autocast for ``dtype="bfloat16"``, else none."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")


def spearman_sample(cfg: AnalyzeConfig, n_positions: int) -> Tensor | None:
    """The stream positions (indices in (sequence, position) order, sorted) that get Spearman's
    rho: ``cfg.spearman_positions`` of them drawn uniformly without replacement, seeded by
    ``cfg.seed``; None = every position (or Spearman off: then an empty sample)."""
    if not cfg.spearman:
        return None
    if cfg.spearman_positions is None or cfg.spearman_positions >= n_positions:
        return None
    return sample_sorted(n_positions, cfg.spearman_positions, seeded(cfg.seed, "spearman"))


def _labels(
    n_seqs: int, segment_ids: Sequence[str] | None, domains: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """Segment names (default "0", "1", ...) and domain labels (default "all"), one per sequence."""
    segment_ids = [str(i) for i in range(n_seqs)] if segment_ids is None else list(segment_ids)
    domains = ["all"] * n_seqs if domains is None else list(domains)
    if len(segment_ids) != n_seqs or len(domains) != n_seqs:
        raise InputError("segment_ids and domains need one entry per sequence")
    return segment_ids, domains


@torch.no_grad()
def analyze_tokens(
    model: HookedTransformer,
    seqs: Sequence[Int[Tensor, "_pos"]],  # "_pos": each sequence has its own length
    cfg: AnalyzeConfig,
    *,
    segment_ids: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    per_token_path: str | Path | None = None,
    ranks: Ranks | None = None,
    records: str | Path | None = None,
) -> AnalysisResult | None:
    """Run the analysis on token sequences (no tokenizer needed).

    Args:
        model: a HookedTransformer (eval mode).
        seqs: one 1-D token tensor per segment (each >= 1 token, <= n_ctx).
        cfg: what to compute (hidden states, targets, scores, metrics, controls).
        segment_ids: a name per sequence (default "0", "1", ...).
        domains: a domain label per sequence (default "all").
        per_token_path: stream the per-token table to this parquet file.
        ranks: the ranks of a torchrun launch (`geomlens.runner.sharding.Ranks`; every rank
            passes the same sequences): the batches are split over them, rank 0 returns the
            result and the others None. None = this process alone.
        records: keep the record of every batch in this folder (`geomlens.runner.record_log`);
            a call given a folder that holds the records of batches 0..k-1 (from an
            interrupted call with the same arguments) folds them instead of computing them, so
            it resumes exactly. None = keep nothing.
    """
    if not seqs:
        raise InputError("analyze_tokens needs at least one token sequence")
    segment_ids, domains = _labels(len(seqs), segment_ids, domains)
    if ranks is None:
        ranks = Ranks(DistInfo(), next(model.parameters()).device)
    batches = list(batch_sequences(seqs, batch_size=cfg.batch_size))
    starts = [0, *accumulate(int(lengths.sum()) for _, lengths in batches)]
    with ranks.together(), tqdm(total=len(batches), desc="analyze", unit="batch",
                                disable=not ranks.is_main) as bar:
        log = None if records is None else RecordLog(
            Path(records), RECORD_TYPES, inputs_digest(cfg, seqs, segment_ids, domains))
        run = _AnalysisState.start(model, seqs, cfg, segment_ids, domains,
                                   per_token_path if ranks.is_main else None, ranks, log)

        def fold(b: int, record: BatchRecord) -> None:
            run.fold(record)
            bar.update()

        ranks.map(len(batches), lambda b: run.compute(b, *batches[b], starts[b]), fold, log=log)
    return run.result(len(seqs)) if ranks.is_main else None


@dataclass
class BatchRecord:
    """What one batch adds to a run: computed on any rank, folded in batch order."""

    n_positions: int
    table: pd.DataFrame
    """The per-token table (`geomlens.analysis.accumulate.TokenTable`)."""
    controls: list[tuple[tuple, int, dict[str, float]]]
    """`ControlSums.chunk_sums` of every scored chunk, in order."""
    null: list[tuple[str, str, str, dict[str, np.ndarray], int]]
    """The permutation null's sums of the batch (`PermutationNull.finish`)."""
    calibration: CalibrationBatch | None = None
    lens: LensRows | None = None
    """The layer lens's sampled rows (scored when folded, in chunks across batches)."""
    trajectory: pd.DataFrame | None = None


RECORD_TYPES = (BatchRecord, CalibrationBatch)
"""The dataclasses a stored `BatchRecord` may hold (`geomlens.runner.records`)."""


@dataclass
class _AnalysisState:
    """The state of one `analyze_tokens` call: fixed draws every batch reads, and the sums
    every batch's record is folded into."""

    model: HookedTransformer
    cfg: AnalyzeConfig
    segment_ids: list[str]
    domains: list[str]
    targets: Targets
    plan: ControlPlan
    fused: Fused
    position_chunk: int
    acc: Accumulator
    sampled: Tensor | None
    """Spearman's sample of global position indices (None = every position)."""
    layer_lens: LayerLensCapture | None
    calib: CalibrationStore | None
    ctrl: ControlSums = field(default_factory=ControlSums)
    traj_tables: list[pd.DataFrame] = field(default_factory=list)

    @classmethod
    def start(cls, model: HookedTransformer, seqs: Sequence[Tensor], cfg: AnalyzeConfig,
              segment_ids: list[str], domains: list[str], per_token_path,
              ranks: Ranks, log: RecordLog | None = None) -> _AnalysisState:
        device = next(model.parameters()).device
        d_vocab = model.cfg.d_vocab_out
        targets = Targets.load(model, cfg.target, device)
        n_total = sum(len(s) for s in seqs)
        chunk = _position_chunk(cfg, model, device, cfg.batch_size * max(len(s) for s in seqs))
        return cls(
            model, cfg, segment_ids, domains, targets,
            plan=ControlPlan.create(cfg, targets, d_vocab, device),
            fused=Fused(_compile(cfg, n_total), dynamic_rows=True),
            position_chunk=_agreed_chunk(chunk, ranks, log),
            acc=Accumulator(metric_names(cfg.ks, spearman=cfg.spearman),
                            per_token_path=per_token_path, keep_per_token=cfg.keep_per_token),
            sampled=spearman_sample(cfg, n_total),
            layer_lens=LayerLensCapture.from_config(model, cfg, n_total) if cfg.layer_lens else None,
            calib=(CalibrationStore(cfg, [len(s) for s in seqs], segment_ids, domains)
                   if cfg.calibrate else None),
        )

    def compute(self, b: int, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, "batch"],
                start: int) -> BatchRecord:
        """Forward batch ``b`` (its first position is stream index ``start``) and score it."""
        cfg, device = self.cfg, next(self.model.parameters()).device
        rows = list(range(b * cfg.batch_size, b * cfg.batch_size + len(lengths)))
        tokens = tokens.to(device)
        lens_hooks = self.layer_lens.hooks(tokens, lengths, start) if self.layer_lens else []
        with forward_precision(cfg, device):
            batch = capture_batch(self.model, tokens, lengths, cfg.hidden, extra_hooks=lens_hooks)
        seq_of = [rows[i] for i in batch.positions.batch_idx.tolist()]
        table = TokenTable([self.segment_ids[i] for i in seq_of], [self.domains[i] for i in seq_of],
                           batch.positions.pos.cpu().numpy(), self.targets)
        sp_rows = (None if self.sampled is None
                   else rows_in_batch(self.sampled, start, batch.n_positions, device))
        calib = (None if self.calib is None else self.calib.batch_part(
            self.model, batch, start, rows[0], self.fused, self.position_chunk))
        controls = []
        for scored in score_batch(batch, self.targets, cfg, self.plan, position_chunk=self.position_chunk,
                                  fused=self.fused, spearman_rows=sp_rows, stream_start=start):
            table.add(scored)
            controls += ControlSums.chunk_sums(scored)
        null = [] if self.plan.null is None else list(self.plan.null.finish())
        n_traj = _trajectory_count(cfg, b, len(rows))
        return BatchRecord(
            batch.n_positions, table.frame(), controls, null, calib,
            lens=None if self.layer_lens is None else self.layer_lens.take_rows(
                batch.logits, table.segments, table.domains, table.pos),
            trajectory=None if n_traj <= 0 else _trajectory_rows(
                self.model, batch, rows[:n_traj], self.segment_ids, self.domains))

    def fold(self, record: BatchRecord) -> None:
        """Add one batch's record to the run's sums (batches in order)."""
        self.acc.add(record.table, record.n_positions)
        for key, n_positions, sums in record.controls:
            self.ctrl.add(key, n_positions, sums)
        for hidden, target, score, sums, n_rows in record.null:
            self.ctrl.add_null(hidden, target, score, sums, n_rows)
        if record.calibration is not None:
            self.calib.add(record.calibration)
        if record.lens is not None:
            self.layer_lens.add_rows(record.lens)
        if record.trajectory is not None:
            self.traj_tables.append(record.trajectory)

    def result(self, n_seqs: int) -> AnalysisResult:
        self.acc.close()
        self.ctrl.copy_aliases(self.targets.alias)
        calib = self.calib
        return AnalysisResult(
            per_segment=self.acc.per_segment(),
            controls=self.ctrl.frame(),
            metrics=self.acc.metrics,
            info=_info(self.cfg, self.acc, n_seqs=n_seqs, d_vocab=self.model.cfg.d_vocab_out,
                       position_chunk=self.position_chunk, targets=self.targets, fused=self.fused),
            per_token=self.acc.per_token(),
            per_layer_tokens=pd.concat(self.traj_tables, ignore_index=True) if self.traj_tables else None,
            layers=self.layer_lens.frame() if self.layer_lens is not None else None,
            calibration=None if calib is None else calib.finish(
                self.model, self.targets, self.fused, self.position_chunk),
            cfg=self.cfg, model_info=model_info(self.model), n_layers=self.model.cfg.n_layers,
        )


def _agreed_chunk(chunk: int, ranks: Ranks, log: RecordLog | None) -> int:
    """The position chunk every rank scores with (the smallest), and a resumed run with the
    one it started with (the chunk fitted to the free memory may differ by then)."""
    chunk = ranks.agree_min(chunk)
    if log is None:
        return chunk
    return ranks.from_main(log.setting("position_chunk", chunk) if ranks.is_main else chunk)


def _info(cfg: AnalyzeConfig, acc: Accumulator, *, n_seqs: int, d_vocab: int,
          position_chunk: int, targets: Targets, fused: Fused) -> dict:
    """Counts, the NDCG@full error bound (max / mean over rows) and the target aliases."""
    n_rows = max(1, acc.n_positions * len(cfg.hidden) * len(cfg.target) * len(cfg.scores))
    return {
        "n_segments": n_seqs,
        "n_positions": acc.n_positions,
        "vocab": d_vocab,
        "position_chunk": position_chunk,
        "target_alias": targets.alias,
        "ndcg_full_error_bound_max": acc.err_max,
        "ndcg_full_error_bound_mean": acc.err_sum / n_rows,
        "control_positions_used": _control_count(cfg, acc.n_positions),
        "spearman_positions_used": (0 if not cfg.spearman else acc.n_positions
                                    if cfg.spearman_positions is None
                                    else min(cfg.spearman_positions, acc.n_positions)),
        "compiled": fused.enabled,
        "logits_reused_as_dot": {f"ln_final/{t}": targets.reuses_logits("ln_final", targets.alias[t])
                                 for t in cfg.target if "ln_final" in cfg.hidden},
    }


def _control_count(cfg: AnalyzeConfig, n_positions: int) -> int:
    if not cfg.controls:
        return 0
    if cfg.control_positions is None:
        return n_positions
    return min(cfg.control_positions, n_positions)


def _trajectory_count(cfg: AnalyzeConfig, batch_number: int, batch_len: int) -> int:
    """How many sequences of this batch get trajectory rows (the first ``trajectory_segments``
    of the stream)."""
    if not cfg.trajectories:
        return 0
    if cfg.trajectory_segments is None:
        return batch_len
    return min(batch_len, cfg.trajectory_segments - batch_number * cfg.batch_size)


def _trajectory_rows(model: HookedTransformer, batch: CapturedBatch, rows: list[int],
                     segment_ids: list[str], domains: list[str]) -> pd.DataFrame:
    from geomlens.geometry.trajectory import trajectory_stats

    n_seqs = len(rows)
    tokens = batch.tokens[:n_seqs]
    df = trajectory_stats(model, tokens, batch.lengths[:n_seqs].to(tokens.device))
    seg_of = np.array([segment_ids[r] for r in rows], dtype=object)
    dom_of = np.array([domains[r] for r in rows], dtype=object)
    df.insert(0, "segment", seg_of[df["batch_idx"].to_numpy()])
    df.insert(1, "domain", dom_of[df["batch_idx"].to_numpy()])
    return df.drop(columns=["batch_idx"])
