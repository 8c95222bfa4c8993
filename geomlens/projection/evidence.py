"""Dar et al.'s (2022) evidence that parameters read in embedding space agree with the model.

Definitions follow their interpretation-experiments notebook (`geomlens.projection.overlap` for
the two scores and the paired-vs-shuffled test); "projection" of a vector x is T x with T the
kind's token matrix (`geomlens.projection.kinds`: W_E for read kinds, W_U for write kinds).

**Recall@k (parameters vs the hidden states that activate them).** Over positions of the bundled
corpus (`collect_activations`), at layer l:
  * MLP (kinds ``mlp_in`` = keys, ``mlp_gate``, ``mlp_out`` = values): the ``n_active`` neurons
    with the largest activation ``blocks.l.mlp.hook_post`` at the position;
  * heads (``v`` = columns of W_V, ``o`` = rows of W_O): the ``n_active`` (head, coordinate)
    entries with the largest ``blocks.l.attn.hook_z``; the W_V column is that of the KV head the
    query head reads (GQA).
  A = union of the top-``k`` tokens (largest signed score) of those vectors' projections;
  B = the top-``k2`` tokens of the hidden state ``ln_final(blocks.l.hook_resid_post) @ W_U``.
  recall = |A ∩ B| / |B|. Baseline: the parameter sets of randomly re-paired positions.
  (The notebook's defaults: k = 20, k2 = 3, n_active = 5.)

**Jaccard@100 (paired parameters).** Per unit of a layer, the top-100 tokens by |score| of each
side's projection: a neuron's key (``mlp_in`` column) and value (``mlp_out`` row); a head
coordinate's W_V column and W_O row (``vo``); a head coordinate's W_Q column and W_K column
(``qk``, KV head read under GQA). Baseline: the first side re-paired at random within the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from geomlens.errors import InputError
from geomlens.projection.kinds import KINDS, available_kinds, parameter_vectors, token_matrix
from geomlens.projection.overlap import overlap_scores, paired_test

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

#: recall kinds -> the hook whose largest entries pick the vectors
RECALL_HOOKS: dict[str, str] = {"mlp_in": "mlp.hook_post", "mlp_gate": "mlp.hook_post",
                                "mlp_out": "mlp.hook_post", "v": "attn.hook_z", "o": "attn.hook_z"}
#: paired-parameter kinds -> (first side, second side)
PAIRS: dict[str, tuple[str, str]] = {"kv": ("mlp_in", "mlp_out"), "vo": ("v", "o"), "qk": ("q", "k")}
TABLE_COLUMNS = ("kind", "layer", "metric", "value", "ci_low", "ci_high", "baseline",
                 "baseline_sd", "p", "n_units", "n_permutations")


@dataclass(kw_only=True)
class Activations:
    """What a forward pass over the corpus leaves for the recall test, per layer."""

    active: dict[tuple[int, str], Int[Tensor, "n_positions n_active"]]
    """(layer, "mlp" | "attn") -> index of the most active neurons / flattened (head, coordinate)."""
    hidden_top: dict[int, Int[Tensor, "n_positions k2"]]
    """layer -> top-k2 token ids of ln_final(resid_post) @ W_U."""
    n_positions: int


def _positions(lengths: list[int], n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` random (segment, position) pairs, position >= 1 (the first token is skipped)."""
    allpos = [(s, p) for s, length in enumerate(lengths) for p in range(1, length)]
    if len(allpos) < n:
        raise InputError(f"the corpus gives {len(allpos)} positions, fewer than n_positions={n}")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(allpos), size=n, replace=False).tolist())
    return [allpos[i] for i in pick]


@torch.no_grad()
def collect_activations(
    model: HookedTransformer, sequences: list[Int[Tensor, "_pos"]], layers: list[int], *,
    n_positions: int, n_active: int = 5, k2: int = 3, seed: int = 0, batch_size: int = 8,
) -> Activations:
    """Run the model over ``sequences`` (model token ids) and keep, at ``n_positions`` random
    positions, the most active MLP neurons and (head, coordinate) entries and the hidden state's
    top-k2 tokens (module doc).

    The segments that hold a sampled position run in right-padded batches of ``batch_size``
    (padding never reaches an earlier position of a causal model) and stop after the last
    layer asked for; the unembedding is applied only to the sampled positions."""
    from geomlens.data.batching import batch_sequences

    where = _positions([len(s) for s in sequences], n_positions, seed)
    names = {f"blocks.{layer}.{h}" for layer in layers for h in ("mlp.hook_post", "attn.hook_z",
                                                                   "hook_resid_post")}
    by_seq: dict[int, list[int]] = {}
    for s, p in where:
        by_seq.setdefault(s, []).append(p)
    segs = list(by_seq)
    active: dict[tuple[int, str], list[Tensor]] = {}
    resid: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    batches = list(batch_sequences([sequences[s] for s in segs], batch_size=batch_size))
    done = 0
    for tokens, _ in tqdm(batches, desc="activations", leave=False):
        rows = torch.tensor([r for r, s in enumerate(segs[done : done + len(tokens)]) for _ in by_seq[s]])
        pos = torch.tensor([p for s in segs[done : done + len(tokens)] for p in by_seq[s]])
        done += len(tokens)
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=lambda n: n in names,
                                        stop_at_layer=max(layers) + 1)
        for layer in layers:
            for part, hook in (("mlp", "mlp.hook_post"), ("attn", "attn.hook_z")):
                key = f"blocks.{layer}.{hook}"
                if key in cache:
                    acts = cache[key][rows, pos].flatten(1)  # attn: [pos, head * d_head]
                    active.setdefault((layer, part), []).append(acts.topk(n_active, dim=-1).indices.cpu())
            resid[layer].append(cache[f"blocks.{layer}.hook_resid_post"][rows, pos])
    W_U = token_matrix(model, "W_U")
    hidden_top = {layer: (model.ln_final(torch.cat(r)[:, None])[:, 0] @ W_U.T).topk(k2, dim=-1).indices.cpu()
                  for layer, r in resid.items()}
    return Activations(active={key: torch.cat(v) for key, v in active.items()},
                       hidden_top=hidden_top, n_positions=len(where))


class TokenSets:
    """Top-k token sets of parameter vectors, projected once per (kind, layer, vector) and cached:
    ``signed`` = the k largest scores, ``absolute`` = the k_abs largest |scores|."""

    def __init__(self, model: HookedTransformer, *, k: int, k_abs: int, chunk: int = 256):
        self.model, self.chunk = model, chunk
        self.k, self.k_abs = min(k, model.cfg.d_vocab), min(k_abs, model.cfg.d_vocab)
        self._cache: dict[tuple[str, int], dict[str, dict[int, Tensor]]] = {}

    @torch.no_grad()
    def get(self, kind: str, layer: int, index: Int[Tensor, "*units"], which: str) -> Int[Tensor, "*units k"]:
        """Sets of vectors ``index`` of ``parameter_vectors(model, kind, layer)``."""
        store = self._cache.setdefault((kind, layer), {"signed": {}, "absolute": {}})
        flat = index.reshape(-1).tolist()
        todo = sorted({i for i in flat if i not in store[which]})
        if todo:
            X = parameter_vectors(self.model, kind, layer).vectors
            T = token_matrix(self.model, KINDS[kind].through)
            for start in range(0, len(todo), self.chunk):
                ids = todo[start : start + self.chunk]
                scores = X[torch.tensor(ids)] @ T.T
                signed = scores.topk(self.k, dim=-1).indices.cpu()
                absolute = scores.abs().topk(self.k_abs, dim=-1).indices.cpu()
                for j, i in enumerate(ids):
                    store["signed"][i], store["absolute"][i] = signed[j], absolute[j]
        return torch.stack([store[which][i] for i in flat]).reshape(*index.shape, -1)


def _kv_head(model: HookedTransformer, flat: Tensor) -> Tensor:
    """Flattened (query head, coordinate) -> flattened (KV head it reads, coordinate)."""
    d_head, n_kv = model.cfg.d_head, model.cfg.n_key_value_heads or model.cfg.n_heads
    group = model.cfg.n_heads // n_kv
    return (flat // d_head) // group * d_head + flat % d_head


def _row(kind: str, layer: int, metric: str, res) -> dict:
    return {"kind": kind, "layer": layer, "metric": metric, "value": res.value,
            "ci_low": res.ci_low, "ci_high": res.ci_high, "baseline": res.baseline,
            "baseline_sd": res.baseline_sd, "p": res.p, "n_units": res.n_units,
            "n_permutations": res.n_permutations}


def recall_rows(
    model: HookedTransformer, acts: Activations, sets: TokenSets, kinds: list[str], layers: list[int],
    *, n_permutations: int, seed: int,
) -> list[dict]:
    """One row per (kind, layer) of recall@k against the shuffled-position baseline."""
    rows = []
    for layer in layers:
        B = acts.hidden_top[layer]
        for kind in kinds:
            part = "mlp" if kind.startswith("mlp") else "attn"
            if (layer, part) not in acts.active:
                continue
            idx = acts.active[(layer, part)]
            if kind == "v":
                idx = _kv_head(model, idx)
            A = sets.get(kind, layer, idx, "signed")  # [n_positions, n_active, k]
            S = overlap_scores(A, B, model.cfg.d_vocab, "recall")
            rows.append(_row(kind, layer, f"recall@{sets.k}/top{B.shape[1]}",
                             paired_test(S, n_permutations=n_permutations, seed=seed + layer)))
    return rows


def pair_units(model: HookedTransformer, pair: str, n_units: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """Vector indices of both sides of ``pair`` (`PAIRS`) for up to ``n_units`` random units."""
    first, second = PAIRS[pair]
    if pair == "kv":
        n = model.cfg.d_mlp
        a = b = torch.arange(n)
    else:
        n = model.cfg.n_heads * model.cfg.d_head
        a = torch.arange(n) if first != "v" else _kv_head(model, torch.arange(n))
        b = torch.arange(n) if second != "k" else _kv_head(model, torch.arange(n))
    if n_units is not None and n_units < n:
        keep = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n, n_units, replace=False)))
        a, b = a[keep], b[keep]
    return a, b


def jaccard_rows(
    model: HookedTransformer, sets: TokenSets, pairs: list[str], layers: list[int], *,
    n_units: int | None, n_permutations: int, seed: int,
) -> list[dict]:
    """One row per (pair, layer) of Jaccard@k_abs between paired parameters vs shuffled pairs."""
    rows = []
    for layer in layers:
        for pair in pairs:
            first, second = PAIRS[pair]
            ia, ib = pair_units(model, pair, n_units, seed + layer)
            S = overlap_scores(sets.get(first, layer, ia, "absolute"),
                               sets.get(second, layer, ib, "absolute"), model.cfg.d_vocab, "jaccard")
            rows.append(_row(pair, layer, f"jaccard@{sets.k_abs}",
                             paired_test(S, n_permutations=n_permutations, seed=seed + layer)))
    return rows


def evidence_table(
    model: HookedTransformer, sequences: list[Int[Tensor, "_pos"]], layers: list[int], *,
    recall_kinds: list[str] | None = None, pairs: list[str] | None = None, k: int = 20,
    k2: int = 3, k_abs: int = 100, n_active: int = 5, n_positions: int = 500,
    n_units: int | None = 512, n_permutations: int = 999, seed: int = 0,
) -> pd.DataFrame:
    """The evidence table (columns `TABLE_COLUMNS`): recall@k of ``recall_kinds`` and
    Jaccard@k_abs of ``pairs`` per layer, each against its shuffled baseline (module doc)."""
    have = available_kinds(model)
    recall_kinds = [kd for kd in (list(RECALL_HOOKS) if recall_kinds is None else recall_kinds)
                    if kd in have or kd not in RECALL_HOOKS]
    pairs = [p for p in (list(PAIRS) if pairs is None else pairs)
             if p not in PAIRS or all(kd in have for kd in PAIRS[p])]
    bad = [kd for kd in recall_kinds if kd not in RECALL_HOOKS] + [p for p in pairs if p not in PAIRS]
    if bad:
        raise InputError(f"unknown evidence kinds {bad}: recall {list(RECALL_HOOKS)}, pairs {list(PAIRS)}")
    sets = TokenSets(model, k=k, k_abs=k_abs)
    rows = []
    if recall_kinds:
        acts = collect_activations(model, sequences, layers, n_positions=n_positions,
                                   n_active=n_active, k2=k2, seed=seed)
        rows += recall_rows(model, acts, sets, recall_kinds, layers,
                            n_permutations=n_permutations, seed=seed)
    rows += jaccard_rows(model, sets, pairs, layers, n_units=n_units,
                         n_permutations=n_permutations, seed=seed)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
