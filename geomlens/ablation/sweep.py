"""Run ablation conditions over token sequences and tabulate their effects.

A *condition* ablates one component (``attn_out``, ``mlp_out`` or ``both``) in a set of layers
at once. `ablation_table` reads a text, a list of texts or token ids (`geomlens.data.inputs`),
batches the sequences (right-padded; padded positions are masked), evaluates the clean model
and every condition on the same batches (same resample permutation per batch for all
conditions) and returns one row per condition:

    layer         the ablated layer (sweep) or the comma-joined layers ablated together
    component     attn_out | mlp_out | both
    method        zero | mean | resample
    loss          mean next-token cross-entropy over all valid positions (token-weighted)
    delta_loss    loss - clean loss
    metric        mean NDCG@k between -||h - W_E|| and p (see `geomlens.ablation.evaluate`)
    delta_metric  metric - clean metric
    top1_agree    share of positions whose nearest embedding is the arg-max of p
    delta_top1_agree
    n_tokens      positions averaged for metric/top1 (the loss uses one fewer per sequence)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from geomlens.ablation.ablate import ablation_hooks, derangement
from geomlens.ablation.evaluate import agreement, next_token_ce
from geomlens.backend import view_of
from geomlens.data.batching import batch_sequences
from geomlens.data.inputs import as_sequences
from geomlens.errors import InputError
from geomlens.models.inputs import check_layers
from geomlens.runner.distributed import DistInfo
from geomlens.runner.record_log import RecordLog, inputs_digest
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

Batch = tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]


@dataclass(frozen=True)
class Condition:
    layers: tuple[int, ...]
    """Layers ablated together."""
    component: str
    """attn_out | mlp_out | both"""

    @property
    def label(self) -> int | str:
        return self.layers[0] if len(self.layers) == 1 else ",".join(map(str, self.layers))


def sweep_conditions(layers: Sequence[int]) -> list[Condition]:
    """Every layer x {attn_out, mlp_out}, one at a time."""
    return [Condition((layer,), comp) for layer in layers for comp in ("attn_out", "mlp_out")]


def conditions_for(cfg: Any, n_layers: int) -> list[Condition]:
    """The conditions an `AblateConfig` asks for, checked against the model's depth."""
    layers = list(range(n_layers)) if cfg.layers is None else list(cfg.layers)
    check_layers(layers, n_layers)
    if cfg.sweep:
        return sweep_conditions(layers)
    return [Condition(tuple(layers), cfg.component)]


def token_batches(model: HookedTransformer, inputs: Any, *, batch_size: int, method: str) -> list[Batch]:
    """``inputs`` (a text, a list of texts or token ids) as right-padded batches of
    ``batch_size`` sequences; for ``resample`` a last batch of one sequence (no donor) is
    dropped with a warning line."""
    seqs = as_sequences(model, inputs, where="ablate")
    batches = list(batch_sequences(seqs, batch_size=batch_size, pad_id=0))
    if method == "resample" and len(batches[-1][0]) < 2:
        logger.warning("ablate: dropping the last batch: one sequence cannot be resampled "
                       "(it needs another sequence of its batch as a donor)")
        batches = batches[:-1]
    if not batches:
        raise InputError("ablate: no batch to evaluate; resample needs at least 2 sequences.")
    return batches


class _Totals:
    def __init__(self) -> None:
        self.ce = self.ndcg = self.top1 = 0.0
        self.n_ce = self.n_positions = 0

    def add(self, part: tuple[float, int, float, float, int]) -> None:
        """One batch's sums (`_evaluate`), in batch order."""
        ce, n_ce, ndcg, top1, n_positions = part
        self.ce += ce
        self.n_ce += n_ce
        self.ndcg += ndcg
        self.top1 += top1
        self.n_positions += n_positions

    def row(self) -> dict[str, int | float]:
        return {"loss": self.ce / max(self.n_ce, 1), "metric": self.ndcg / max(self.n_positions, 1),
                "top1_agree": self.top1 / max(self.n_positions, 1), "n_tokens": self.n_positions}


@torch.no_grad()
def _evaluate(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"],
    fwd_hooks: list,
    *,
    k: int,
    chunk_size: int,
) -> tuple[float, int, float, float, int]:
    """One batch's (CE sum, CE count, NDCG sum, top-1 sum, positions)."""
    grabbed: dict[str, Tensor] = {}

    def grab(tensor: Tensor, *, hook) -> Tensor:
        grabbed["h"] = tensor
        return tensor

    logits = model.run_with_hooks(
        tokens, fwd_hooks=fwd_hooks + [("unembed.hook_in", grab)], return_type="logits"
    )
    ce_sum, n_ce = next_token_ce(logits, tokens, lengths)
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    ndcg, top1 = agreement(grabbed["h"][valid], logits[valid], view_of(model).W_E, k=k, chunk_size=chunk_size)
    return ce_sum, n_ce, float(ndcg.sum()), float(top1.sum()), int(valid.sum())


def ablation_table(
    model: HookedTransformer,
    inputs: Any,
    conditions: Sequence[Condition],
    *,
    method: str,
    k: int = 10,
    seed: int = 0,
    chunk_size: int = 8192,
    batch_size: int = 8,
    ranks: Ranks | None = None,
    records: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, int | float]]:
    """Evaluate the clean model and each condition on ``inputs`` (a text, a list of texts or
    token ids: `geomlens.data.inputs.as_sequences`); returns ``(table, clean)`` where ``clean``
    has the clean ``loss``, ``metric``, ``top1_agree``, ``n_tokens`` and ``n_sequences``.

    For ``method="resample"`` each batch of ``batch_size`` sequences gets one seeded
    `derangement` shared by all conditions (drawn in batch order; `token_batches` drops a last
    batch of one). ``ranks``: the ranks of a torchrun launch (`geomlens.runner.sharding.Ranks`):
    the batches are split over them and every rank gets the whole table. ``records``: keep
    every batch's numbers in this folder, and fold those already there instead of computing
    them (`geomlens.runner.record_log`: an interrupted call resumes).
    """
    batches = token_batches(model, inputs, batch_size=batch_size, method=method)
    generator = torch.Generator().manual_seed(seed)
    perms = [derangement(len(tokens), generator=generator) if method == "resample" else None
             for tokens, _ in batches]
    device = model.cfg.device
    ranks = ranks if ranks is not None else Ranks(DistInfo(), torch.device(device))

    def compute(b: int) -> list[tuple[float, int, float, float, int]]:
        tokens, lengths = (t.to(device) for t in batches[b])
        valid = torch.arange(tokens.shape[1], device=device)[None, :] < lengths[:, None]
        parts = [_evaluate(model, tokens, lengths, [], k=k, chunk_size=chunk_size)]
        for cond in conditions:
            hooks = ablation_hooks(cond.layers, cond.component, method, valid, perm=perms[b])
            parts.append(_evaluate(model, tokens, lengths, hooks, k=k, chunk_size=chunk_size))
        return parts

    clean = _Totals()
    totals = [_Totals() for _ in conditions]
    with tqdm(total=len(batches), desc=f"ablate ({len(conditions)} conditions)", unit="batch",
              disable=not ranks.is_main) as bar:
        def fold(b: int, parts: list) -> None:
            for tot, part in zip([clean, *totals], parts):
                tot.add(part)
            bar.update()

        ranks.map(len(batches), compute, fold, to_all=True,
                  log=None if records is None else RecordLog(Path(records), inputs=inputs_digest(
                      batches, list(conditions), method, k, seed, chunk_size)))
    base = {**clean.row(), "n_sequences": sum(len(tokens) for tokens, _ in batches)}
    rows = []
    for cond, tot in zip(conditions, totals):
        r = tot.row()
        rows.append({
            "layer": cond.label, "component": cond.component, "method": method,
            "loss": r["loss"], "delta_loss": r["loss"] - base["loss"],
            "metric": r["metric"], "delta_metric": r["metric"] - base["metric"],
            "top1_agree": r["top1_agree"], "delta_top1_agree": r["top1_agree"] - base["top1_agree"],
            "n_tokens": r["n_tokens"],
        })
    return pd.DataFrame(rows), base
