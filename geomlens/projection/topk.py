"""Top-k entries of vocabulary-sized products, without forming a vocab x vocab matrix.

Two searches live here:

`vector_topk`  scores = X Tᵀ for a few parameter vectors X [n, d_model] against a token matrix
               T [d_vocab, d_model]: computed ``chunk_size`` vectors at a time (one [chunk, d_vocab]
               block in memory), top-k and bottom-k of each row taken per chunk.

`factored_topk`  the k largest and the k smallest entries of a low-rank product M = A B with
               A [n_rows, r] and B [r, n_cols] (e.g. W_E W_V W_O W_U of one head, r = d_head),
               **exactly**, by chunked search over rows with two bounds:

  1. Bounding coordinates. With thin QRs A = Q_a R_a, Bᵀ = Q_b R_b and the SVD
     R_a R_bᵀ = P S Qᵀ, M = a bᵀ for a = Q_a P S and b = Q_b Q (r columns each, sorted by
     singular value). These serve *only* for bounds; every reported value is computed from A
     and B themselves (row of A · column of B), so it is the product's own entry.
  2. Row bound (prunes whole rows; columns likewise with the roles swapped): for the first
     ``n_exact_dims`` singular directions g, a_ig b_jg ≤ max(a_ig · max_j b_jg, a_ig · min_j b_jg)
     (exact per direction); the remaining directions are bounded by Cauchy–Schwarz,
     ‖a_i,rest‖ · max_j ‖b_j,rest‖; the smaller of this and ‖a_i‖ · max_j ‖b_j‖ is kept.
  3. Partial-product screen (prunes visited rows): with G = ``n_partial_dims``,
     |M_ij − a_i,<G · b_j,<G| ≤ ‖a_i,≥G‖ ‖b_j,≥G‖. The partial product costs G/r of the dense
     one in flops. A row whose partial maximum plus ‖a_i,≥G‖ · max_j ‖b_j,≥G‖ (and partial
     minimum minus it) cannot beat the thresholds is dropped; the rows left are multiplied
     exactly. Used only when r is large (Gemma: d_head 256); for small r the output write, not
     the flops, dominates and the screen saves nothing.
  4. Rows are visited ``row_chunk`` at a time in decreasing order of their bound. The first
     chunk is evaluated densely to set the thresholds (k-th largest t_top, k-th smallest t_bot);
     later chunks go through the screens. In an exact block, rows whose max (min) cannot beat
     t_top (t_bot) are skipped after one pass; the rest are merged by top-k. The search stops
     when no unvisited row's bound can beat either threshold.

Every bound carries a relative slack (``BOUND_SLACK`` · ‖a_i‖ · max_j ‖b_j‖) against float32
round-off, and every value comes from an exact block A[rows] @ B[:, cols], so the result is the
dense product's top-k up to the order of exact ties. `FactoredSearchStats` reports how much
was evaluated.

Cost, measured (one CPU thread, shared machine): the bounds prune well when a few rows or
columns carry most of the norm (SmolLM2 layer-0 OV: 0.3% of entries evaluated, 1.3 s), and
hardly at all when the spectrum is flat: most SmolLM2 heads evaluate ~all 49,152² entries
(~20–30 s per head, top and bottom together); Gemma-3's 262,144² x d_head 256 heads would take
~30 min each, so `geomlens.projection.project` can restrict the token pairs (``pair_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

#: relative slack added to bounds so float32 round-off never prunes a true top entry
BOUND_SLACK = 1e-4


def vector_topk(
    X: Float[Tensor, "n d_model"],
    T: Float[Tensor, "d_vocab d_model"],
    k: int,
    *,
    largest: bool = True,
    chunk_size: int = 64,
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"]]:
    """Top-k (``largest``) or bottom-k token scores x · T[v] of every row x of X."""
    k = min(k, T.shape[0])
    values, indices = [], []
    for i in range(0, X.shape[0], chunk_size):
        scores = X[i : i + chunk_size].to(T.dtype) @ T.T  # [chunk, d_vocab]
        v, ix = scores.topk(k, dim=-1, largest=largest)
        values.append(v)
        indices.append(ix)
    return torch.cat(values), torch.cat(indices)


@dataclass(kw_only=True)
class FactoredSearchStats:
    """How much of an n_rows x n_cols product `factored_topk` evaluated."""

    n_rows: int
    """Rows of the product."""
    n_cols: int
    """Columns of the product."""
    rows_visited: int
    """Rows not pruned by their row bound."""
    entries_bounded: int
    """Entries whose partial-product bound was computed (rows visited x surviving columns)."""
    entries_evaluated: int
    """Entries computed exactly."""

    @property
    def fraction_evaluated(self) -> float:
        return self.entries_evaluated / (self.n_rows * self.n_cols)


@dataclass(kw_only=True)
class FactoredTopK:
    """The k largest ("top") and k smallest ("bottom") entries of a product, best first."""

    top_values: Float[Tensor, "k"]
    top_rows: Int[Tensor, "k"]
    top_cols: Int[Tensor, "k"]
    bottom_values: Float[Tensor, "k"]
    bottom_rows: Int[Tensor, "k"]
    bottom_cols: Int[Tensor, "k"]
    stats: FactoredSearchStats


class _Best:
    """Running k best (value, row, col) triples; ``sign`` = +1 keeps the largest, −1 the smallest."""

    def __init__(self, k: int, sign: float, device: torch.device, dtype: torch.dtype) -> None:
        self.k, self.sign = k, sign
        self.values = torch.empty(0, dtype=dtype, device=device)
        self.rows = torch.empty(0, dtype=torch.long, device=device)
        self.cols = torch.empty(0, dtype=torch.long, device=device)

    @property
    def threshold(self) -> float:
        """k-th best value so far (±inf until k values are held)."""
        return float(self.values[-1]) if len(self.values) == self.k else -self.sign * torch.inf

    def beats(self, x: Tensor) -> Tensor:
        return self.sign * x > self.sign * self.threshold

    def merge(self, values: Tensor, rows: Tensor, cols: Tensor) -> None:
        v = torch.cat([self.values, values])
        keep = (self.sign * v).topk(min(self.k, len(v))).indices
        self.values = v[keep]
        self.rows = torch.cat([self.rows, rows])[keep]
        self.cols = torch.cat([self.cols, cols])[keep]


def _bounding_coordinates(
    A: Float[Tensor, "n_rows r"], B: Float[Tensor, "r n_cols"]
) -> tuple[Float[Tensor, "n_rows rank"], Float[Tensor, "n_cols rank"]]:
    """a, b with a bᵀ = A B and columns sorted by singular value (step 1 of the module doc);
    rank = min(n_rows, n_cols, r)."""
    Qa, Ra = torch.linalg.qr(A.double())
    Qb, Rb = torch.linalg.qr(B.T.double())
    P, S, Qh = torch.linalg.svd(Ra @ Rb.T, full_matrices=False)
    return (Qa @ (P * S)).to(A.dtype), (Qb @ Qh.T).to(A.dtype)


def _row_bounds(
    a: Float[Tensor, "n r"], b: Float[Tensor, "m r"], n_exact_dims: int
) -> tuple[Float[Tensor, "n"], Float[Tensor, "n"]]:
    """Upper and lower bounds, per row i of a, on a_i · b_j over all j (step 2)."""
    g = min(n_exact_dims, a.shape[1])
    hi, lo = b[:, :g].max(0).values, b[:, :g].min(0).values
    prod_hi, prod_lo = a[:, :g] * hi, a[:, :g] * lo
    rest = a[:, g:].norm(dim=-1) * (b[:, g:].norm(dim=-1).max() if g < a.shape[1] else 0.0)
    plain = a.norm(dim=-1) * b.norm(dim=-1).max()
    upper = torch.minimum(torch.maximum(prod_hi, prod_lo).sum(-1) + rest, plain)
    lower = torch.maximum(torch.minimum(prod_hi, prod_lo).sum(-1) - rest, -plain)
    slack = BOUND_SLACK * plain
    return upper + slack, lower - slack


def _update(best: _Best, block: Float[Tensor, "rows cols"], rows: Tensor, cols: Tensor) -> None:
    """Merge the k best entries of an exactly computed block; rows whose extreme cannot beat
    the current threshold are skipped after one max (or min) pass."""
    extreme = block.amax(1) if best.sign > 0 else block.amin(1)
    live = best.beats(extreme)
    if not live.any():
        return
    sub, sub_rows = block[live], rows[live]
    v, flat = (best.sign * sub).reshape(-1).topk(min(best.k, sub.numel()))
    best.merge(best.sign * v, sub_rows[flat // sub.shape[1]], cols[flat % sub.shape[1]])


@torch.no_grad()
def factored_topk(
    A: Float[Tensor, "n_rows r"],
    B: Float[Tensor, "r n_cols"],
    k: int,
    *,
    n_exact_dims: int = 4,
    n_partial_dims: int = 32,
    max_block: int = 1 << 23,
) -> FactoredTopK:
    """The k largest and k smallest entries of A @ B, exactly, without forming it (module doc).

    The partial-product screen (step 3) is used only when r > 2 · ``n_partial_dims``; below
    that a row chunk costs about as much to multiply exactly (the output write dominates).
    ``max_block`` caps the entries of one row chunk (memory: 4 bytes each).
    """
    n_rows, n_cols = A.shape[0], B.shape[1]
    k = min(k, n_rows * n_cols)
    a, b = _bounding_coordinates(A, B)
    r = a.shape[1]  # rank bound: min(n_rows, n_cols, A.shape[1])
    G = n_partial_dims if r > 2 * n_partial_dims else r
    row_hi, row_lo = _row_bounds(a, b, n_exact_dims)
    col_hi, col_lo = _row_bounds(b, a, n_exact_dims)
    a_rest, b_rest = a[:, G:].norm(dim=-1), b[:, G:].norm(dim=-1)
    slack = BOUND_SLACK * a.norm(dim=-1) * b.norm(dim=-1).max()
    top, bot = _Best(k, 1.0, A.device, A.dtype), _Best(k, -1.0, A.device, A.dtype)
    key = torch.maximum(row_hi, -row_lo)
    order = key.argsort(descending=True)
    row_chunk = max(1, min(max_block // n_cols, n_rows))
    cols = torch.arange(n_cols, device=A.device)
    visited = bounded = evaluated = 0
    for start in range(0, n_rows, row_chunk):
        rows = order[start : start + row_chunk]
        full = len(top.values) == k and len(bot.values) == k
        if full and key[rows[0]] <= min(top.threshold, -bot.threshold):
            break  # every later row is bounded inside both thresholds
        rows = rows[top.beats(row_hi[rows]) | bot.beats(row_lo[rows])]
        if len(rows) == 0:
            continue
        visited += len(rows)
        if full and G < r:  # step 3: screen the rows by their partial product
            partial = a[rows, :G] @ b[cols, :G].T
            margin = a_rest[rows] * b_rest[cols].max() + slack[rows]
            live = top.beats(partial.amax(1) + margin) | bot.beats(partial.amin(1) - margin)
            bounded += partial.numel()
            rows = rows[live]
        block = A[rows] @ B[:, cols]
        evaluated += block.numel()
        _update(top, block, rows, cols)
        _update(bot, block, rows, cols)
        cols = cols[top.beats(col_hi[cols]) | bot.beats(col_lo[cols])]
        if len(cols) == 0:
            break
    stats = FactoredSearchStats(n_rows=n_rows, n_cols=n_cols, rows_visited=visited,
                                entries_bounded=bounded, entries_evaluated=evaluated)
    return FactoredTopK(top_values=top.values, top_rows=top.rows, top_cols=top.cols,
                        bottom_values=bot.values, bottom_rows=bot.rows, bottom_cols=bot.cols,
                        stats=stats)
