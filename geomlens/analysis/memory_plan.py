"""The memory planner: the analysis's position chunk from the device's free memory, and the
peak it promises.

Besides the model's weights, the analysis holds (V = d_vocab, all counts in bytes):

* ``logits``: one batch's logits, float32 (plus the forward's bf16 copy when it ran in bf16);
* ``chunk``: the scoring working set of one chunk of positions, `VOCAB_BUFFERS` x 4 x chunk x V
  (dot products, squared distances, the scores, their rank keys and indices, p, Spearman's
  ranks, the random-matrix control's scores: measured at 18.4 float32 vectors per position
  at V = 128,256 and 262,144, about 1 more per control position;
  tests/unit/analysis/test_memory_plan.py checks the bound at both widths);
* ``targets``: two float32 copies of each distinct target matrix (V x d_model x 4: the
  float32 matrix and a contiguous transposed one);
* ``controls``: the permutation tables (`geomlens.analysis.permutation.block_size`), one random
  matrix per target and the buffered bucket maps (one byte per control position, token, rank
  group, hidden state and target);
* `OVERHEAD` for tables, Python objects and allocator slack.

`plan_analysis` gives the chunk the share of ``fraction`` x free memory left by the rest;
`MemoryPlan.bound_bytes` is the peak it states above what was in use before the analysis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from geomlens.analysis.agreement import rank_groups
from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.permutation import block_size, table_dtype
from geomlens.errors import InputError

VOCAB_BUFFERS = 24
"""float32 [chunk, d_vocab] matrices alive at once per chunk (measured: 18.4-19.5; above)."""
OVERHEAD = 128 << 20
"""Fixed allowance: per-segment tables, Python objects, allocator slack."""
MAX_CHUNK = 4096
"""Larger chunks gain nothing: the per-chunk Python work is amortized well before."""


@dataclass(frozen=True)
class MemoryPlan:
    position_chunk: int
    """Positions scored at once."""
    free_bytes: int
    """Free memory of the device when planned."""
    budget_bytes: int
    """The part of it the analysis may use (``fraction`` x free)."""
    parts: dict[str, int]
    """The bound's terms: logits, chunk, targets, controls, overhead."""

    @property
    def bound_bytes(self) -> int:
        """Stated peak above the memory in use before the analysis."""
        return sum(self.parts.values())

    def as_dict(self) -> dict:
        return {**asdict(self), "bound_bytes": self.bound_bytes}


def free_memory(device: str | torch.device) -> int:
    """Free bytes: ``torch.cuda.mem_get_info`` on CUDA, MemAvailable of /proc/meminfo on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise InputError("Cannot read the free memory (/proc/meminfo); give --position-chunk.")


def fixed_parts(cfg: AnalyzeConfig, *, d_vocab: int, d_model: int, batch_positions: int,
                forward_dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Every term of the bound but the chunk's (module docstring)."""
    n_targets = len(set(cfg.target))
    item = torch.empty((), dtype=forward_dtype).element_size()
    parts = {"logits": batch_positions * d_vocab * (4 + (0 if item == 4 else item)),
             "targets": 2 * n_targets * d_vocab * d_model * 4, "controls": 0, "overhead": OVERHEAD}
    if cfg.controls:
        groups = len(set(rank_groups(cfg.scores).values()))
        rows = min(cfg.control_positions or batch_positions, batch_positions)
        tables = 0
        if cfg.n_permutations:
            perm_item = torch.empty((), dtype=table_dtype(d_vocab)).element_size()
            tables = 2 * d_vocab * block_size(cfg.n_permutations, d_vocab) * perm_item
        parts["controls"] = (tables + n_targets * d_vocab * d_model * 4
                             + rows * d_vocab * groups * len(cfg.hidden) * n_targets)
    return parts


def plan_analysis(
    cfg: AnalyzeConfig, *, d_vocab: int, d_model: int, batch_positions: int,
    device: str | torch.device = "cpu", forward_dtype: torch.dtype = torch.float32,
    free_bytes: int | None = None, fraction: float = 0.5,
) -> MemoryPlan:
    """The largest chunk (<= `MAX_CHUNK`, <= ``batch_positions``) whose working set, with the
    rest of the bound, fits in ``fraction`` of the free memory (``free_bytes`` overrides the
    measured free memory: tests, planning for another machine)."""
    free = free_memory(device) if free_bytes is None else int(free_bytes)
    budget = int(free * fraction)
    parts = fixed_parts(cfg, d_vocab=d_vocab, d_model=d_model, batch_positions=batch_positions,
                        forward_dtype=forward_dtype)
    per_row = VOCAB_BUFFERS * 4 * d_vocab
    chunk = min(MAX_CHUNK, max(1, batch_positions), (budget - sum(parts.values())) // per_row)
    if chunk < 1:
        raise InputError(
            f"Not enough free memory for the analysis: {free / 2**30:.2f} GiB free, of which "
            f"{fraction:.0%} may be used; one batch ({batch_positions} positions x {d_vocab} "
            f"tokens) needs {(sum(parts.values()) + per_row) / 2**30:.2f} GiB with one position "
            "per chunk. Lower --batch-size, --max-tokens or --control-positions.")
    return MemoryPlan(position_chunk=int(chunk), free_bytes=free, budget_bytes=budget,
                      parts={**parts, "chunk": int(chunk) * per_row})
