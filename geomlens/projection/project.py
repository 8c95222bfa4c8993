"""Parameters projected onto the vocabulary (Dar et al. 2022): `project_parameters` -> table.

One row per (parameter, direction, rank) with the columns `COLUMNS`:

    layer, head, neuron   which parameter; head / neuron are <NA> (nullable Int64) where they do
                          not apply (head for MLP kinds; neuron for ov/qk; see `kinds`)
    kind                  mlp_in | mlp_gate | mlp_out | ov | qk | q | k | v | o
    direction             top (largest scores) | bottom (most negative scores)
    rank                  0 = the most extreme score in that direction
    token_id, token       model token id and its text (`geomlens.data.token_map`)
    score                 vector kinds: x · t (t = row of the token matrix); pair kinds: the entry
                          of the token x token matrix
    through               the token matrix used: "W_E" or "W_U" for vector kinds; for pair kinds
                          "<src>/<token>", e.g. "W_E/W_U"
    src_token_id, src_token   pair kinds only (else <NA>): the other token of the pair

Token pairs. For both pair kinds ``src_token`` is the token at the attended (key) position and
``token`` the token at the destination:
    ov   src → token: attending to ``src_token`` writes (through W_V W_O, direct path) toward
         ``token``'s unembedding; score = E_src[src] W_V W_O E_out[token]ᵀ (rows of
         E_src = W_E, E_out = W_Uᵀ by default).
    qk   ``token`` is the query token, ``src_token`` the key token; score = E[token] W_Q W_Kᵀ
         E[src]ᵀ (both W_E by default); rotary, qk-norm and 1/√d_head are not applied.
The vocab x vocab matrix is never formed: `geomlens.projection.topk.factored_topk` searches the
factored product exactly. ``pair_token_ids`` restricts both sides to a token subset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.models.tokens import load_token_stream
from geomlens.models.trained import is_trained
from geomlens.models.zoo import OFFLINE_MODELS
from geomlens.projection.kinds import (
    KINDS,
    PAIR_KINDS,
    available_kinds,
    n_heads_of,
    parameter_vectors,
    token_matrix,
)
from geomlens.projection.topk import factored_topk, vector_topk

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

COLUMNS: tuple[str, ...] = (
    "layer", "head", "neuron", "kind", "direction", "rank", "token_id", "token", "score",
    "through", "src_token_id", "src_token",
)
INT_COLUMNS = ("layer", "head", "neuron", "rank", "token_id", "src_token_id")


def _frame(rows: dict[str, list], model: HookedTransformer) -> pd.DataFrame:
    """Typed table: nullable Int64 ids, token text from the model's token map."""
    tm = token_map(model)
    df = pd.DataFrame({c: rows.get(c, []) for c in COLUMNS if c not in ("token", "src_token")})
    for c in INT_COLUMNS:
        df[c] = pd.array(df[c].tolist(), dtype="Int64")
    for c in ("kind", "direction", "through"):
        df[c] = df[c].astype("string")
    df["score"] = df["score"].astype("float64")
    for ids, text in (("token_id", "token"), ("src_token_id", "src_token")):
        df[text] = pd.array([pd.NA] * len(df), dtype="string")
        ok = df[ids].notna().to_numpy()
        if ok.any():
            df.loc[ok, text] = tm.labels(df.loc[ok, ids].astype("int64").tolist())
    return df[list(COLUMNS)]


def _select(n: int, wanted: Sequence[int] | None, what: str) -> list[int]:
    if wanted is None:
        return list(range(n))
    bad = [i for i in wanted if not 0 <= i < n]
    if bad:
        raise InputError(f"{what} {bad} do not exist (0..{n - 1})")
    return list(wanted)


def _heads_for(model: HookedTransformer, kind: str, heads: Sequence[int] | None) -> list[int]:
    """Query heads as given; for k and v the KV heads those query heads read (GQA)."""
    query = _select(model.cfg.n_heads, heads, "heads")
    n_kv = n_heads_of(model, kind)
    if n_kv == model.cfg.n_heads:
        return query
    return sorted({h // (model.cfg.n_heads // n_kv) for h in query})


@torch.no_grad()
def project_vectors(
    model: HookedTransformer, kind: str, layer: int, *, heads: Sequence[int] | None = None,
    neurons: Sequence[int] | None = None, through: str | None = None, k: int = 20,
) -> pd.DataFrame:
    """Top-k and bottom-k tokens of each vector of a vector kind at one layer.

    ``heads`` are query heads; for k and v under GQA, the KV heads they read. ``neurons`` must
    exist for MLP kinds; for q/k/v/o those below d_head are kept."""
    through = through or KINDS[kind].through
    pv = parameter_vectors(model, kind, layer)
    n = int(pv.neuron.max()) + 1
    if pv.head is not None and neurons is not None:  # coordinates within a head: those that exist
        neurons = [i for i in neurons if i < n]
    keep = np.isin(pv.neuron, _select(n, neurons, "neurons"))
    if pv.head is not None:
        keep &= np.isin(pv.head, _heads_for(model, kind, heads))
    idx = np.flatnonzero(keep)
    X, T = pv.vectors[torch.as_tensor(idx)], token_matrix(model, through)
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for direction, largest in (("top", True), ("bottom", False)):
        values, ids = vector_topk(X, T, k, largest=largest)
        n_vec, kk = values.shape
        rows["layer"] += [layer] * (n_vec * kk)
        rows["head"] += np.repeat(pv.head[idx], kk).tolist() if pv.head is not None else [pd.NA] * (n_vec * kk)
        rows["neuron"] += np.repeat(pv.neuron[idx], kk).tolist()
        rows["kind"] += [kind] * (n_vec * kk)
        rows["direction"] += [direction] * (n_vec * kk)
        rows["rank"] += np.tile(np.arange(kk), n_vec).tolist()
        rows["token_id"] += ids.reshape(-1).tolist()
        rows["score"] += values.reshape(-1).double().tolist()
        rows["through"] += [through] * (n_vec * kk)
        rows["src_token_id"] += [pd.NA] * (n_vec * kk)
    return _frame(rows, model)


@torch.no_grad()
def project_pairs(
    model: HookedTransformer, kind: str, layer: int, head: int, *, through: str | None = None,
    k: int = 20, pair_token_ids: Int[Tensor, "n_tokens"] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Top-k and bottom-k token pairs of one head's ov or qk map (module doc); also returns the
    search statistics (`FactoredSearchStats` as a dict)."""
    if kind not in PAIR_KINDS:
        raise InputError(f"{kind!r} is not a pair kind ({PAIR_KINDS})")
    _select(model.cfg.n_heads, [head], "heads")
    tok_through = through or KINDS[kind].through
    src_through = through or KINDS[kind].src_through
    E_tok, E_src = token_matrix(model, tok_through), token_matrix(model, src_through)
    circuit = model.OV[layer, head] if kind == "ov" else model.QK[layer, head]
    if kind == "ov":  # rows = source tokens, columns = output tokens
        A, B = E_src @ circuit.A, circuit.B @ E_tok.T
    else:  # rows = query (destination) tokens, columns = key (source) tokens
        A, B = E_tok @ circuit.A, circuit.B @ E_src.T
    if pair_token_ids is not None:
        sub = pair_token_ids.to(A.device)
        A, B = A[sub], B[:, sub]
    res = factored_topk(A, B, k)
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for direction, values, r, c in (("top", res.top_values, res.top_rows, res.top_cols),
                                    ("bottom", res.bottom_values, res.bottom_rows, res.bottom_cols)):
        if pair_token_ids is not None:
            r, c = sub[r], sub[c]
        tok, src = (c, r) if kind == "ov" else (r, c)
        kk = len(values)
        for col, val in (("layer", [layer] * kk), ("head", [head] * kk), ("neuron", [pd.NA] * kk),
                         ("kind", [kind] * kk), ("direction", [direction] * kk),
                         ("rank", list(range(kk))), ("token_id", tok.tolist()),
                         ("score", values.double().tolist()),
                         ("through", [f"{src_through}/{tok_through}"] * kk),
                         ("src_token_id", src.tolist())):
            rows[col] += val
    stats = {"layer": layer, "head": head, "kind": kind, "n_rows": res.stats.n_rows,
             "fraction_evaluated": res.stats.fraction_evaluated}
    return _frame(rows, model), stats


def project_parameters(
    model: HookedTransformer,
    kinds: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    *,
    heads: Sequence[int] | None = None,
    neurons: Sequence[int] | None = None,
    through: str | None = None,
    k: int = 20,
    pair_token_ids: Int[Tensor, "n_tokens"] | None = None,
) -> pd.DataFrame:
    """The projection table (columns `COLUMNS`) of the chosen kinds, layers, heads, neurons.

    Args:
        kinds: subset of `available_kinds(model)`; None = all of them.
        layers: None = all.
        heads: None = all; applies to every per-head kind (KV heads for k, v).
        neurons: MLP neurons, or coordinates within a head for q/k/v/o; None = all.
        through: "W_E" or "W_U" for every kind (both sides of ov/qk); None = each kind's
            default (`geomlens.projection.kinds`).
        k: tokens (pairs) per direction.
        pair_token_ids: restrict ov/qk token pairs to these ids (None = the whole vocabulary).

    ``table.attrs["pair_search"]`` lists, per ov/qk head, the fraction of the token x token
    product the exact search evaluated.
    """
    kinds = list(kinds) if kinds is not None else available_kinds(model)
    bad = [kd for kd in kinds if kd not in available_kinds(model)]
    if bad:
        raise InputError(f"kinds {bad} are not available (available: {available_kinds(model)})")
    layers = _select(model.cfg.n_layers, layers, "layers")
    parts, search = [], []
    for layer in layers:
        for kind in kinds:
            if kind in PAIR_KINDS:
                for h in _select(model.cfg.n_heads, heads, "heads"):
                    df, stats = project_pairs(model, kind, layer, h, through=through, k=k,
                                              pair_token_ids=pair_token_ids)
                    parts.append(df)
                    search.append(stats)
            else:
                parts.append(project_vectors(model, kind, layer, heads=heads, neurons=neurons,
                                             through=through, k=k))
    out = pd.concat(parts, ignore_index=True) if parts else _frame({}, model)
    out.attrs["pair_search"] = search
    return out


def top_tokens_table(table: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """One row per (kind, layer, head, neuron, through, direction) of a projection table with its
    best ``n`` tokens joined in a ``tokens`` column (pairs as ``src -> token``), for reading."""
    keys = ["kind", "layer", "head", "neuron", "through", "direction"]
    rows = []
    for key, df in table.groupby(keys, dropna=False, sort=False):
        df = df.sort_values("rank").head(n)
        if df["src_token"].notna().any():
            toks = [f"{s!r}->{t!r}" for s, t in zip(df["src_token"], df["token"])]
        else:
            toks = [repr(t) for t in df["token"]]
        rows.append({**dict(zip(keys, key)), "tokens": ", ".join(toks)})
    return pd.DataFrame(rows, columns=[*keys, "tokens"])


def frequent_token_ids(model: HookedTransformer, name: str, n: int) -> Int[Tensor, "n"]:
    """The n most frequent model token ids of the bundled train_cpu text (ties: lower id).

    Runs with a reduced vocabulary already number their tokens by training frequency, so their
    ids 0..n−1 are used (the OOV id excluded)."""
    tm = token_map(model)
    if tm.kept is not None:
        return torch.arange(min(n, len(tm.kept)))
    if name in OFFLINE_MODELS or is_trained(name):
        tokenizer = model.geomlens_info["tokenizer"] if is_trained(name) else name
        stream = load_token_stream("train_cpu", tokenizer_name=tokenizer)
        counts = torch.bincount(stream, minlength=model.cfg.d_vocab)[: model.cfg.d_vocab]
        order = sorted(range(len(counts)), key=lambda v: (-int(counts[v]), v))
        return torch.tensor(order[: min(n, int((counts > 0).sum()))])
    raise InputError(f"pair_tokens needs token counts, available for offline models and run dirs; "
                     f"for {name!r} set pair_tokens to None (the whole vocabulary).")


def headline_examples(table: pd.DataFrame, n: int = 5) -> dict[str, str]:
    """Headline: the top-n tokens (pairs) of the first parameter listed for each kind."""
    out = {}
    top = table[table["direction"] == "top"]
    ids = top[["layer", "head", "neuron"]].astype("float64").fillna(-1)
    for kind in top["kind"].unique():
        sel = top[top["kind"] == kind]
        first = ids.loc[sel.index].iloc[0]
        sel = sel[(ids.loc[sel.index] == first).all(axis=1)].head(n)
        label = "".join(f"{c[0].upper()}{int(v)}" for c, v in first.items() if v >= 0)
        if kind in PAIR_KINDS:
            toks = [f"{s!r}->{t!r}" for s, t in zip(sel["src_token"], sel["token"])]
        else:
            toks = [repr(t) for t in sel["token"]]
        out[f"{kind} {label}"] = ", ".join(toks)
    return out
