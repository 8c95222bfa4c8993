"""Next-token losses of a model with and without first-layer K/V, per segment and per domain.

Loss = mean cross-entropy in nats over every predicted token (position t predicts token t+1;
a segment of n tokens has n − 1 predictions). Per segment we keep the *sum* and the *count*,
so a domain's loss is the token-weighted mean Σ sums / Σ counts. Its 95% CI is a percentile
bootstrap over segments of that ratio (segments resampled with replacement, numpy PCG64).
Differences (patched − clean) are bootstrapped paired: one resample serves both conditions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from geomlens.data.batching import batch_sequences
from geomlens.data.inputs import as_sequences
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import patch_kv
from geomlens.runner.distributed import DistInfo
from geomlens.runner.record_log import RecordLog, inputs_digest
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


@torch.no_grad()
def segment_losses(
    model: HookedTransformer,
    inputs: Any,
    *,
    layer_map: LayerMap | None = None,
    mode: str = "all",
    batch_size: int = 8,
    ranks: Ranks | None = None,
    records: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: (sum of next-token cross-entropies in nats, number of predicted tokens).

    ``inputs`` is a text, a list of texts or token ids (`geomlens.data.inputs.as_sequences`;
    one segment each, never cut). ``layer_map`` None = the clean model. Batches are right-padded
    (causal: padding never changes earlier positions) and the padded positions are masked out.
    ``ranks``: the ranks of a torchrun launch (`geomlens.runner.sharding.Ranks`): the batches
    are split over them and every rank gets every segment's numbers, in order. ``records``:
    keep every batch's numbers in this folder, and fold those already there instead of
    computing them (`geomlens.runner.record_log`: an interrupted pass resumes).
    """
    seqs = as_sequences(model, inputs, where="segment_losses")
    device = model.cfg.device
    ranks = ranks if ranks is not None else Ranks(DistInfo(), torch.device(device))
    batches = list(batch_sequences(seqs, batch_size=batch_size, pad_id=0))
    parts: list[tuple[Tensor, Tensor]] = [None] * len(batches)  # type: ignore[list-item]

    def compute(b: int) -> tuple[Tensor, Tensor]:
        tokens, lengths = (t.to(device) for t in batches[b])
        logits = model(tokens, return_type="logits")[:, :-1].float()
        ce = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        pos = torch.arange(tokens.shape[1] - 1, device=device)
        valid = (pos[None, :] < lengths[:, None] - 1).float()
        return (ce.view_as(valid) * valid).sum(1).double().cpu(), valid.sum(1).long().cpu()

    def fold(b: int, part: tuple[Tensor, Tensor]) -> None:
        parts[b] = part

    ctx = patch_kv(model, layer_map, mode) if layer_map is not None else contextlib.nullcontext()
    with ctx:
        ranks.map(len(batches), compute, fold, to_all=True,
                  log=None if records is None else RecordLog(Path(records), inputs=inputs_digest(
                      seqs, batch_size, layer_map, mode if layer_map is not None else None)))
    return torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[1] for p in parts]).numpy()


def ratio_ci(
    sums: np.ndarray, counts: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(Σ sums / Σ counts, low, high): token-weighted mean with a percentile bootstrap CI
    over segments. For a paired difference pass ``sums_b − sums_a`` (same counts)."""
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(n_bootstrap, len(sums)))
    boots = sums[idx].sum(1) / counts[idx].sum(1)
    alpha = (1 - level) / 2
    mean = float(sums.sum() / counts.sum())
    return mean, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def loss_rows(
    clean: np.ndarray,
    patched: np.ndarray,
    counts: np.ndarray,
    domains: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per domain plus ``all``: clean and patched loss and perplexity, their
    difference, each with a 95% bootstrap CI over segments (paired for the difference).

    Args:
        clean, patched: per-segment CE sums (`segment_losses`) of the two conditions.
        counts: per-segment predicted tokens.
        domains: per-segment domain; None = only the ``all`` row.
    """
    labels = np.asarray(domains if domains is not None else ["all"] * len(counts))
    groups = ([(d, labels == d) for d in dict.fromkeys(labels)] if domains is not None else [])
    groups.append(("all", np.ones(len(counts), dtype=bool)))
    rows = []
    for name, sel in groups:
        kw = dict(n_bootstrap=n_bootstrap, seed=seed)
        c, cl, ch = ratio_ci(clean[sel], counts[sel], **kw)
        p, pl, ph = ratio_ci(patched[sel], counts[sel], **kw)
        d, dl, dh = ratio_ci(patched[sel] - clean[sel], counts[sel], **kw)
        rows.append({
            "domain": name, "n_segments": int(sel.sum()), "n_tokens": int(counts[sel].sum()),
            "clean_loss": c, "clean_loss_low": cl, "clean_loss_high": ch,
            "patched_loss": p, "patched_loss_low": pl, "patched_loss_high": ph,
            "delta_loss": d, "delta_loss_low": dl, "delta_loss_high": dh,
            "clean_ppl": math.exp(c), "clean_ppl_low": math.exp(cl), "clean_ppl_high": math.exp(ch),
            "patched_ppl": math.exp(p), "patched_ppl_low": math.exp(pl),
            "patched_ppl_high": math.exp(ph),
        })
    return pd.DataFrame(rows)
