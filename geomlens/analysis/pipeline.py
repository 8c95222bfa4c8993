"""Streaming distance-vs-probability analysis over token sequences.

For every valid position of every sequence: one forward pass gives the LM logits (p) and the
hidden states h; for each (hidden, target) the dot products and squared distances to the whole
vocabulary are computed once per chunk of positions, every score is derived from them and
reduced at once to per-position scalar metrics (`geomlens.analysis.metrics`). Nothing
vocabulary-sized outlives its chunk, so peak memory does not grow with the number of segments;
the per-token table is streamed to parquet when a path is given.

Controls (on the first ``control_positions`` positions of the stream):
    permutation    the rows of the target matrix are shuffled (``score[:, perm]``), n times;
    random_matrix  a Gaussian matrix with the target's shape and row-norm distribution;
    observed       the real metric on exactly the same positions, for the p-value.
Spearman is left out of the controls (it needs one full sort per score and permutation).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.metrics import all_score_metrics, metric_names, reference
from geomlens.errors import InputError
from geomlens.geometry.distances import row_sq_norms
from geomlens.geometry.scores import ScoreParts, score_parts
from geomlens.metrics.stats import random_matrix_like, random_permutations

logger = logging.getLogger(__name__)

ID_COLUMNS = ("segment", "domain", "pos", "hidden", "target", "score")
_VOCAB_BUDGET = 1 << 23
"""Default number of [position, token] entries scored at once (32 MiB per float32 matrix)."""


def hidden_hook_names(n_layers: int) -> dict[str, str]:
    """Hook point of each ``hidden`` choice (full names)."""
    return {
        "ln_final": "unembed.hook_in",
        "resid_post": f"blocks.{n_layers - 1}.hook_resid_post",
    }


def target_matrices(
    model: HookedTransformer, names: Sequence[str]
) -> tuple[dict[str, Float[Tensor, "d_vocab d_model"]], dict[str, str]]:
    """The requested target matrices (one token vector per row) and aliases.

    Returns ``(matrices, alias)`` where ``alias[name]`` is the name whose results ``name``
    reuses: W_U is aliased to W_E when W_U.T equals W_E exactly (tied, unprocessed weights).
    """
    full = {"W_E": model.W_E.detach().float(), "W_U": model.W_U.detach().T.float()}
    alias = {name: name for name in names}
    if "W_E" in names and "W_U" in names and full["W_E"].shape == full["W_U"].shape:
        if torch.equal(full["W_E"], full["W_U"]):
            alias["W_U"] = "W_E"
    return {name: full[name] for name in names if alias[name] == name}, alias


@dataclass
class AnalysisResult:
    """Everything `analyze_tokens` measured."""

    per_segment: pd.DataFrame
    """Mean of every metric per (segment, domain, hidden, target, score), plus n_positions."""
    controls: pd.DataFrame
    """Control means: one row per (hidden, target, score, variant, index)."""
    metrics: list[str]
    """Metric columns, in table order."""
    info: dict
    """Counts, the NDCG@full error bound (max / mean over positions), aliases."""
    per_token: pd.DataFrame | None = None
    """One row per (position, hidden, target, score) when ``cfg.keep_per_token``."""
    per_layer_tokens: pd.DataFrame | None = field(default=None, repr=False)
    """`trajectory_stats` rows with segment/domain columns when ``cfg.trajectories``."""


class _ControlSums:
    """Running sums of the control metrics, keyed by (hidden, target, score, variant, index)."""

    def __init__(self) -> None:
        self.sums: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[tuple, int] = defaultdict(int)

    def add(self, key: tuple, metrics: dict[str, Tensor]) -> None:
        n = next(iter(metrics.values())).shape[0]
        self.counts[key] += n
        for name, val in metrics.items():
            self.sums[key][name] += float(val.double().sum())

    def frame(self) -> pd.DataFrame:
        rows = []
        for key, sums in self.sums.items():
            hidden, target, score, variant, index = key
            n = self.counts[key]
            rows.append({"hidden": hidden, "target": target, "score": score, "variant": variant,
                         "index": index, "n_positions": n,
                         **{m: s / n for m, s in sums.items()}})
        return pd.DataFrame(rows)


def _chunk_size(cfg: AnalyzeConfig, vocab: int) -> int:
    if cfg.position_chunk is not None:
        return max(1, cfg.position_chunk)
    return max(1, _VOCAB_BUDGET // vocab)


@torch.no_grad()
def analyze_tokens(
    model: HookedTransformer,
    seqs: Sequence[Int[Tensor, "_pos"]],
    cfg: AnalyzeConfig,
    *,
    segment_ids: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    per_token_path: str | Path | None = None,
) -> AnalysisResult:
    """Run the analysis on token sequences (no tokenizer needed).

    Args:
        model: a HookedTransformer (eval mode).
        seqs: one 1-D token tensor per segment (each >= 1 token, <= n_ctx).
        cfg: what to compute (hidden states, targets, scores, metrics, controls).
        segment_ids: a name per sequence (default "0", "1", ...).
        domains: a domain label per sequence (default "all").
        per_token_path: stream the per-token table to this parquet file.
    """
    if not seqs:
        raise InputError("analyze_tokens needs at least one token sequence")
    segment_ids = [str(i) for i in range(len(seqs))] if segment_ids is None else list(segment_ids)
    domains = ["all"] * len(seqs) if domains is None else list(domains)
    if len(segment_ids) != len(seqs) or len(domains) != len(seqs):
        raise InputError("segment_ids and domains need one entry per sequence")
    device = next(model.parameters()).device
    hooks = hidden_hook_names(model.cfg.n_layers)
    mats, alias = target_matrices(model, cfg.target)
    mats = {k: v.to(device) for k, v in mats.items()}
    mats_sq = {k: row_sq_norms(v) for k, v in mats.items()}
    vocab = model.cfg.d_vocab_out
    metrics = metric_names(cfg.ks, spearman=cfg.spearman)
    chunk = _chunk_size(cfg, vocab)

    perms: list[Tensor] = []
    randoms: dict[str, Tensor] = {}
    if cfg.controls:
        perms = [p.to(device) for p in random_permutations(vocab, cfg.n_permutations, seed=cfg.seed)]
        randoms = {k: random_matrix_like(v, seed=cfg.seed + 1 + i) for i, (k, v) in enumerate(mats.items())}
    control_left = float("inf") if cfg.control_positions is None else cfg.control_positions
    ctrl = _ControlSums()

    writer = None
    seg_tables: list[pd.DataFrame] = []
    kept_tokens: list[pd.DataFrame] = []
    traj_tables: list[pd.DataFrame] = []
    n_positions = 0
    err_max, err_sum = 0.0, 0.0

    order = range(len(seqs))
    n_batches = (len(seqs) + cfg.batch_size - 1) // cfg.batch_size
    batches = _batches(seqs, cfg.batch_size)
    for b, (tokens, lengths) in enumerate(tqdm(batches, total=n_batches, desc="analyze", unit="batch")):
        rows = list(order[b * cfg.batch_size : b * cfg.batch_size + len(lengths)])
        tokens = tokens.to(device)
        store: dict[str, Tensor] = {}

        def save(tensor: Tensor, *, hook) -> None:
            store[hook.name] = tensor.detach()

        wanted = [hooks[h] for h in cfg.hidden]
        logits = model.run_with_hooks(tokens, fwd_hooks=[(n, save) for n in wanted])
        mask = torch.arange(tokens.shape[1], device=device)[None, :] < lengths.to(device)[:, None]
        b_idx, p_idx = mask.nonzero(as_tuple=True)
        logits_flat = logits[b_idx, p_idx]
        del logits
        h_flat = {h: store[hooks[h]][b_idx, p_idx].float() for h in cfg.hidden}
        del store

        cols: dict[str, list] = defaultdict(list)
        for start in range(0, len(b_idx), chunk):
            stop = min(len(b_idx), start + chunk)
            n = stop - start
            ref = reference(logits_flat[start:stop], topk=cfg.topk_exact, gain=cfg.gain,
                            spearman=cfg.spearman)
            n_ctrl = int(min(n, control_left)) if cfg.controls else 0
            control_left -= n_ctrl
            ref_ctrl = ref.head(n_ctrl) if n_ctrl else None
            seg = [segment_ids[rows[i]] for i in b_idx[start:stop].tolist()]
            dom = [domains[rows[i]] for i in b_idx[start:stop].tolist()]
            pos = p_idx[start:stop].cpu().numpy()
            for hidden in cfg.hidden:
                h = h_flat[hidden][start:stop]
                for target, mat in mats.items():
                    parts = score_parts(h, mat, targets_sq=mats_sq[target], eps=cfg.eps)
                    per_score = all_score_metrics(parts, cfg.scores, ref, ks=cfg.ks,
                                                  jsd_base=cfg.jsd_base, spearman=cfg.spearman)
                    for name, m in per_score.items():
                        values = {k: v.cpu().numpy() for k, v in m.items()}
                        for tgt in [t for t in cfg.target if alias[t] == target]:
                            cols["segment"] += seg
                            cols["domain"] += dom
                            cols["pos"].append(pos)
                            cols["hidden"] += [hidden] * n
                            cols["target"] += [tgt] * n
                            cols["score"] += [name] * n
                            for k, v in values.items():
                                cols[k].append(v)
                    if n_ctrl:
                        _controls(ctrl, parts, per_score, ref_ctrl, n_ctrl, perms, cfg,
                                  key=(hidden, target), random_matrix=randoms.get(target),
                                  h=h[:n_ctrl])
                    del parts, per_score
        table = pd.DataFrame({k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else v)
                              for k, v in cols.items()})
        for c in ("segment", "domain", "hidden", "target", "score"):
            table[c] = table[c].astype("category")
        n_positions += len(b_idx)
        err_max = max(err_max, float(table["ndcg_full_err"].max()))
        err_sum += float(table["ndcg_full_err"].sum())
        seg_tables.append(_per_segment(table, metrics))
        if per_token_path is not None:
            writer = _write_parquet(writer, per_token_path, table)
        if cfg.keep_per_token:
            kept_tokens.append(table)
        if cfg.trajectories:
            n_traj = len(rows) if cfg.trajectory_segments is None else min(
                len(rows), cfg.trajectory_segments - b * cfg.batch_size)
            if n_traj > 0:
                traj_tables.append(_trajectory_rows(model, tokens[:n_traj], lengths[:n_traj],
                                                    rows[:n_traj], segment_ids, domains))
    if writer is not None:
        writer.close()

    for alias_name, real in alias.items():  # controls of aliased targets are the same numbers
        if alias_name != real:
            ctrl.sums.update({(k[0], alias_name, *k[2:]): v for k, v in list(ctrl.sums.items())
                              if k[1] == real})
            ctrl.counts.update({(k[0], alias_name, *k[2:]): v for k, v in list(ctrl.counts.items())
                                if k[1] == real})
    n_rows = max(1, n_positions * len(cfg.hidden) * len(cfg.target) * len(cfg.scores))
    info = {
        "n_segments": len(seqs),
        "n_positions": n_positions,
        "vocab": vocab,
        "position_chunk": chunk,
        "target_alias": alias,
        "ndcg_full_error_bound_max": err_max,
        "ndcg_full_error_bound_mean": err_sum / n_rows,
        "control_positions_used": _control_count(cfg, n_positions),
    }
    return AnalysisResult(
        per_segment=pd.concat(seg_tables, ignore_index=True),
        controls=ctrl.frame(),
        metrics=metrics,
        info=info,
        per_token=pd.concat(kept_tokens, ignore_index=True) if kept_tokens else None,
        per_layer_tokens=pd.concat(traj_tables, ignore_index=True) if traj_tables else None,
    )


def _batches(seqs: Sequence[Tensor], batch_size: int):
    """Right-padded (tokens [batch pos], lengths [batch]) batches, in order (pad id 0)."""
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        lengths = torch.tensor([len(s) for s in chunk])
        tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for row, s in enumerate(chunk):
            tokens[row, : len(s)] = s
        yield tokens, lengths


def _control_count(cfg: AnalyzeConfig, n_positions: int) -> int:
    if not cfg.controls:
        return 0
    if cfg.control_positions is None:
        return n_positions
    return min(cfg.control_positions, n_positions)


def _controls(ctrl: _ControlSums, parts: ScoreParts, observed: dict, ref, n: int,
              perms: list[Tensor], cfg: AnalyzeConfig, *, key: tuple,
              random_matrix: Tensor | None, h: Tensor) -> None:
    """Controls on the first ``n`` positions of a chunk (Spearman left out)."""
    for name, m in observed.items():
        ctrl.add((*key, name, "observed", 0), {k: v[:n] for k, v in m.items() if k != "spearman"})
    head = ScoreParts(dot=parts.dot[:n], sq_dist=parts.sq_dist[:n], h_norm=parts.h_norm[:n],
                      e_norm=parts.e_norm, eps=parts.eps)
    for i, perm in enumerate(perms):  # rows of the target shuffled = columns of the scores
        shuffled = all_score_metrics(head, cfg.scores, ref, ks=cfg.ks, jsd_base=cfg.jsd_base,
                                     spearman=False, perm=perm)
        for name, m in shuffled.items():
            ctrl.add((*key, name, "permutation", i), m)
    if random_matrix is not None:
        rparts = score_parts(h, random_matrix, eps=cfg.eps)
        rand = all_score_metrics(rparts, cfg.scores, ref, ks=cfg.ks, jsd_base=cfg.jsd_base,
                                 spearman=False)
        for name, m in rand.items():
            ctrl.add((*key, name, "random_matrix", 0), m)


def _per_segment(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    cols = [m for m in metrics if m in table.columns] + ["ndcg_full_err"]
    grouped = table.groupby(["segment", "domain", "hidden", "target", "score"], observed=True)
    out = grouped[cols].mean()
    out.insert(0, "n_positions", grouped.size())
    return out.reset_index()


def _write_parquet(writer, path: str | Path, table: pd.DataFrame):
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = table.astype({c: str for c in ("segment", "domain", "hidden", "target", "score")})
    arrow = pa.Table.from_pandas(plain, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(str(path), arrow.schema)
    writer.write_table(arrow)
    return writer


def _trajectory_rows(model, tokens, lengths, rows, segment_ids, domains) -> pd.DataFrame:
    from geomlens.geometry.trajectory import trajectory_stats

    df = trajectory_stats(model, tokens, lengths.to(tokens.device))
    seg_of = np.array([segment_ids[r] for r in rows], dtype=object)
    dom_of = np.array([domains[r] for r in rows], dtype=object)
    df.insert(0, "segment", seg_of[df["batch_idx"].to_numpy()])
    df.insert(1, "domain", dom_of[df["batch_idx"].to_numpy()])
    return df.drop(columns=["batch_idx"])
