"""Aligning two models' parameters in embedding space (Dar et al. 2022).

Two models that share a tokenizer (not necessarily d_model or depth) are compared on the tokens
both can represent (`shared_vocabulary`). For each vector kind κ (default: the MLP kinds):

  1. Every parameter vector is projected through its kind's token matrix (W_E for read kinds,
     W_U for write kinds; `geomlens.projection.kinds`) restricted to the shared tokens, and
     Pearson correlations between projections of a and b are computed through the Gram matrices
     (`geomlens.projection.gram`): no vocabulary-sized vector is formed.
  2. Layer scores: S_κ[la, lb] = mean over all pairs (i ∈ la, j ∈ lb) of |corr(x_i, y_j)|
     (``reduce="mean"``, the paper's), or ``"best"``: the mean over i of max_j |corr| and over j
     of max_i |corr|, averaged. ``mean`` over kinds gives S_mean.
  3. Layers are matched by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`,
     maximising the summed score). matched_score = mean S over the matched pairs.
  4. Null: the same pipeline after a random permutation of b's shared-token rows (token i of a
     paired with token π(i) of b), ``n_permutations`` times; p = (1 + #{null ≥ observed}) /
     (1 + n). Baseline (paper's): the same pipeline on the raw d_model vectors (token matrix =
     I, so Pearson over coordinates), only when d_model matches; its null permutes b's
     coordinates.
  5. Neuron matching within each matched layer pair (of the embedding-space S_mean): Hungarian on
     the |corr| neuron x neuron matrix; neuron_corr = mean matched |corr| (embedding and raw,
     each with its null over the first ``n_neuron_null`` permutations), and top-k overlap =
     |top-k tokens of x_i ∩ top-k tokens of y_π(i)| / k averaged over matched neurons, against
     the same for a random pairing of the neurons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.projection.config import REDUCERS
from geomlens.projection.gram import EmbeddingGram, centred
from geomlens.projection.kinds import KINDS, available_kinds, parameter_vectors, token_matrix

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)
MLP_KINDS = ("mlp_in", "mlp_gate", "mlp_out")


@dataclass(kw_only=True)
class SharedVocab:
    """Rows of model a and of model b that stand for the same tokenizer token, in id order."""

    rows_a: Int[Tensor, "n_shared"]
    rows_b: Int[Tensor, "n_shared"]
    note: str
    """How the shared vocabulary was formed (sizes, what was left out)."""


def _same_tokenizer(tok_a, tok_b) -> bool | None:
    if tok_a is None or tok_b is None:
        return None
    return tok_a is tok_b or tok_a.get_vocab() == tok_b.get_vocab()


def shared_vocabulary(model_a: HookedTransformer, model_b: HookedTransformer) -> SharedVocab:
    """Tokens both models represent by a row of their own (OOV ids of reduced vocabularies are
    left out), matched through the tokenizer ids (`geomlens.data.token_map`)."""
    tm_a, tm_b = token_map(model_a), token_map(model_b)
    same = _same_tokenizer(tm_a.tokenizer, tm_b.tokenizer)
    if same is False:
        raise InputError("The two models have different tokenizers; alignment needs shared tokens.")
    ids_a = tm_a.to_original(tm_a.shared_ids()).numpy()
    ids_b = tm_b.to_original(tm_b.shared_ids()).numpy()
    common = np.intersect1d(ids_a, ids_b)
    if len(common) < 2:
        raise InputError("The two models share fewer than 2 tokens.")
    sa, sb = np.argsort(ids_a), np.argsort(ids_b)
    rows_a = sa[np.searchsorted(ids_a[sa], common)]
    rows_b = sb[np.searchsorted(ids_b[sb], common)]
    note = (f"{len(common)} shared tokens (model a: {model_a.cfg.d_vocab} rows, model b: "
            f"{model_b.cfg.d_vocab} rows; OOV ids excluded)"
            + ("" if same else "; no tokenizer on one side: ids assumed identical"))
    return SharedVocab(rows_a=torch.as_tensor(rows_a), rows_b=torch.as_tensor(rows_b), note=note)


def _through(model: HookedTransformer, kind: str) -> str:
    """The kind's token matrix, or W_E for heads without a W_U (logged)."""
    through = KINDS[kind].through
    if through == "W_U" and getattr(model.unembed, "W_U", None) is None:
        logger.info("%s: the LM head has no W_U; %s is projected through W_E", kind, kind)
        return "W_E"
    return through


@dataclass(kw_only=True)
class KindData:
    """One kind's per-layer vectors of both models and the token matrices they project through."""

    kind: str
    vecs_a: list[Float[Tensor, "n d_a"]]
    vecs_b: list[Float[Tensor, "m d_b"]]
    tokens_a: Float[Tensor, "n_shared d_a"]
    tokens_b: Float[Tensor, "n_shared d_b"]
    gram: EmbeddingGram = field(init=False)

    def __post_init__(self) -> None:
        self.gram = EmbeddingGram.from_token_matrices(self.tokens_a, self.tokens_b)


def kind_data(model_a, model_b, kind: str, shared: SharedVocab) -> KindData:
    vecs = [[parameter_vectors(m, kind, layer).vectors.detach() for layer in range(m.cfg.n_layers)]
            for m in (model_a, model_b)]
    T_a = token_matrix(model_a, _through(model_a, kind)).detach()[shared.rows_a.to(model_a.W_E.device)]
    T_b = token_matrix(model_b, _through(model_b, kind)).detach()[shared.rows_b.to(model_b.W_E.device)]
    return KindData(kind=kind, vecs_a=vecs[0], vecs_b=vecs[1], tokens_a=T_a, tokens_b=T_b)


def layer_scores(
    gram: EmbeddingGram, units_a: list[Tensor], units_b: list[Tensor], reduce: str = "mean",
    *, dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """S[la, lb] from `EmbeddingGram.unit_a` / ``unit_b`` vectors per layer (module doc, 2).

    All layer pairs come from one [Σn_a, Σn_b] correlation matrix (one product), reduced per
    block; ``dtype`` float32 halves the cost of the null's many repeats."""
    if reduce not in REDUCERS:
        raise InputError(f"reduce must be one of {REDUCERS}, not {reduce!r}")
    Xa, Xb = torch.cat(units_a).to(dtype), torch.cat(units_b).to(dtype)
    C = (Xa @ gram.K_ab.to(dtype) @ Xb.T).abs()
    ea = np.cumsum([0] + [len(u) for u in units_a])
    eb = np.cumsum([0] + [len(u) for u in units_b])
    S = np.zeros((len(units_a), len(units_b)))
    for i in range(len(units_a)):
        rows = C[ea[i] : ea[i + 1]]
        for j in range(len(units_b)):
            block = rows[:, eb[j] : eb[j + 1]]
            if reduce == "mean":
                S[i, j] = float(block.mean())
            else:
                S[i, j] = 0.5 * float(block.amax(1).mean() + block.amax(0).mean())
    return S


def row_hits(S: np.ndarray) -> float:
    """Share of layers of a whose best-scoring layer of b (row-wise argmax) is the same index
    (square S only; NaN otherwise)."""
    if S.shape[0] != S.shape[1]:
        return float("nan")
    return float(np.mean(S.argmax(1) == np.arange(len(S))))


def hungarian_hits(S: np.ndarray) -> float:
    """Share of layers matched to the same index by the global (Hungarian) matching."""
    if S.shape[0] != S.shape[1]:
        return float("nan")
    pairs, _ = match_layers(S)
    return float(np.mean([a == b for a, b in pairs]))


def match_layers(S: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Hungarian matching maximising the summed score: (pairs (la, lb), mean matched score)."""
    rows, cols = linear_sum_assignment(S, maximize=True)
    return list(zip(rows.tolist(), cols.tolist())), float(S[rows, cols].mean())


def match_neurons(C: Float[Tensor, "n m"]) -> tuple[np.ndarray, np.ndarray, float]:
    """Hungarian matching of neurons on |C|: (rows, cols, mean matched |corr|)."""
    A = C.abs().cpu().numpy()
    rows, cols = linear_sum_assignment(A, maximize=True)
    return rows, cols, float(A[rows, cols].mean())


def topk_overlap(
    X: Float[Tensor, "n d_a"], T_a: Float[Tensor, "n_shared d_a"],
    Y: Float[Tensor, "n d_b"], T_b: Float[Tensor, "n_shared d_b"], k: int,
) -> float:
    """Mean |top-k(T_a x_i) ∩ top-k(T_b y_i)| / k over paired rows i (shared-token positions)."""
    k = min(k, T_a.shape[0])
    top_a = (X.to(T_a.dtype) @ T_a.T).topk(k, dim=-1).indices
    top_b = (Y.to(T_b.dtype) @ T_b.T).topk(k, dim=-1).indices
    same = (top_a[:, :, None] == top_b[:, None, :]).any(-1).sum(-1)
    return float(same.double().mean()) / k


def check_kinds(model_a, model_b, kinds: list[str] | None) -> list[str]:
    """The vector kinds both models have (None = their common MLP kinds)."""
    common = [k for k in available_kinds(model_a) if k in available_kinds(model_b)]
    if kinds is None:
        kinds = [k for k in MLP_KINDS if k in common]
    bad = [k for k in kinds if k not in common or KINDS[k].side == "pair"]
    if bad or not kinds:
        raise InputError(f"kinds {bad or kinds} cannot be aligned; both models have {common} "
                         "(pair kinds ov/qk have no vectors)")
    return list(kinds)


@dataclass(kw_only=True)
class SpaceScores:
    """Layer scores of one space ("embedding", or "raw" d_model coordinates) and its null."""

    scores: dict[str, np.ndarray]
    """kind or "mean" -> S (rows: layers of a, columns: layers of b)."""
    null_scores: dict[str, np.ndarray]
    """S averaged over the null permutations."""
    null_matched: dict[str, np.ndarray]
    """matched_score of each null permutation."""
    null_hits: dict[str, np.ndarray] = field(default_factory=dict)
    """Per key, [n_permutations, 2]: row-wise and Hungarian diagonal hit rates of each null."""
    units: dict[str, tuple[list[Tensor], list[Tensor]]] = field(repr=False)
    """Per kind, the normalised vectors of both models per layer."""
    null_grams: dict[str, list[EmbeddingGram]] = field(repr=False)
    """Per kind, the Gram matrices of the first permutations (for the neuron-level null)."""


def _units(data: KindData) -> tuple[list[Tensor], list[Tensor]]:
    return [data.gram.unit_a(X) for X in data.vecs_a], [data.gram.unit_b(Y) for Y in data.vecs_b]


def _shared_tokens(data: dict[str, KindData]) -> dict[str, str]:
    """kind -> the first kind with the same token matrices on both sides (tied models read and
    write through one matrix: one permuted Gram per permutation serves every kind)."""
    out: dict[str, str] = {}
    for kd, d in data.items():
        out[kd] = next((rep for rep in dict.fromkeys(out.values())
                        if torch.equal(d.tokens_a, data[rep].tokens_a)
                        and torch.equal(d.tokens_b, data[rep].tokens_b)), kd)
    return out


def score_space(
    data: dict[str, KindData], *, reduce: str, n_permutations: int, n_neuron_null: int, seed: int
) -> SpaceScores:
    """Layer scores of every kind and their mean, and the null that re-pairs the rows of the
    token matrices (tokens, or coordinates for the raw space) at random (module doc, 2-4)."""
    kinds = list(data)
    units = {kd: _units(d) for kd, d in data.items()}
    scores = {kd: layer_scores(d.gram, *units[kd], reduce) for kd, d in data.items()}
    scores["mean"] = np.mean([scores[kd] for kd in kinds], axis=0)
    gen = torch.Generator().manual_seed(seed)
    share = _shared_tokens(data)
    centred_tokens = {kd: (centred(data[kd].tokens_a), centred(data[kd].tokens_b)) for kd in set(share.values())}
    null_sum = {key: np.zeros_like(S) for key, S in scores.items()}
    null_matched: dict[str, list[float]] = {key: [] for key in scores}
    null_hits: dict[str, list[tuple[float, float]]] = {key: [] for key in scores}
    null_grams: dict[str, list[EmbeddingGram]] = {kd: [] for kd in kinds}
    n_rows = next(iter(data.values())).tokens_a.shape[0]
    for p in range(n_permutations):
        perm = torch.randperm(n_rows, generator=gen)
        S_p = {}
        permuted = {rep: data[rep].gram.with_permutation(*centred_tokens[rep], perm) for rep in centred_tokens}
        for kd in data:
            kp = permuted[share[kd]]
            if p < n_neuron_null:
                null_grams[kd].append(kp)
            S_p[kd] = layer_scores(kp, *units[kd], reduce, dtype=torch.float32)
        S_p["mean"] = np.mean([S_p[kd] for kd in kinds], axis=0)
        for key, S in S_p.items():
            null_sum[key] += S
            null_matched[key].append(match_layers(S)[1])
            null_hits[key].append((row_hits(S), hungarian_hits(S)))
    return SpaceScores(
        scores=scores, null_scores={key: v / max(n_permutations, 1) for key, v in null_sum.items()},
        null_matched={key: np.array(v) for key, v in null_matched.items()},
        null_hits={key: np.array(v).reshape(-1, 2) for key, v in null_hits.items()}, units=units,
        null_grams=null_grams)


@dataclass(kw_only=True)
class Alignment:
    """Everything `align_models` measured (module doc): `layer_table` and ``neurons`` are the
    tables; ``spaces["embedding"]`` / ``spaces["raw"]`` hold the layer x layer matrices."""

    kinds: list[str]
    shared: SharedVocab
    reduce: str
    spaces: dict[str, SpaceScores]
    """"embedding", and "raw" when d_model matches."""
    neurons: pd.DataFrame
    """Neuron matching per kind and matched layer pair."""
    neuron_matches: dict[tuple[str, int, int], np.ndarray]
    """(kind, layer_a, layer_b) -> the neuron of b matched to each neuron of a (−1 = none)."""

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """Embedding-space layer scores (key: a kind or "mean")."""
        return self.spaces["embedding"].scores

    @property
    def raw_scores(self) -> dict[str, np.ndarray]:
        """Raw d_model layer scores (empty when d_model differs)."""
        return self.spaces["raw"].scores if "raw" in self.spaces else {}

    @property
    def null_scores(self) -> dict[str, np.ndarray]:
        """Embedding-space layer scores averaged over the token-permutation null."""
        return self.spaces["embedding"].null_scores

    def layer_table(self) -> pd.DataFrame:
        """One row per (key, space): matched pairs, matched and mean score, the diagonal's mean
        against the off-diagonal mean, diagonal hit rates (row-wise argmax and Hungarian; same
        depth only), and for each the null's mean and permutation p."""
        rows = []
        for space, sc in self.spaces.items():
            for key, S in sc.scores.items():
                pairs, matched = match_layers(S)
                null = sc.null_matched[key]
                hits = sc.null_hits.get(key, np.zeros((0, 2)))
                square = S.shape[0] == S.shape[1]
                row = {
                    "kind": key, "space": space, "matched_score": matched,
                    "mean_score": float(S.mean()),
                    "diag_score": float(np.diag(S).mean()) if square else np.nan,
                    "offdiag_score": (float(S[~np.eye(len(S), dtype=bool)].mean()) if square else np.nan),
                    "row_hit_rate": row_hits(S), "identity_accuracy": hungarian_hits(S),
                    "null_mean": float(null.mean()) if len(null) else np.nan,
                    "null_std": float(null.std()) if len(null) else np.nan,
                    "p_value": _p(matched, null),
                    "row_hit_null": float(hits[:, 0].mean()) if len(hits) else np.nan,
                    "row_hit_p": _p(row_hits(S), hits[:, 0]) if square else np.nan,
                    "identity_null": float(hits[:, 1].mean()) if len(hits) else np.nan,
                    "identity_p": _p(hungarian_hits(S), hits[:, 1]) if square else np.nan,
                    "n_permutations": len(null),
                    "pairs": " ".join(f"{a}-{b}" for a, b in pairs),
                }
                rows.append(row)
        return pd.DataFrame(rows)


def _p(observed: float, null: np.ndarray) -> float:
    """(1 + #{null >= observed}) / (1 + n); NaN without a null."""
    return float((1 + (null >= observed).sum()) / (1 + len(null))) if len(null) else np.nan


def _neuron_corr(units, null_grams, gram, la, lb) -> tuple[np.ndarray, np.ndarray, float, float]:
    Ua, Ub = units[0][la], units[1][lb]
    r, c, corr = match_neurons(gram.cross(Ua, Ub))
    null = [match_neurons(kn.cross(Ua, Ub))[2] for kn in null_grams]
    return r, c, corr, float(np.mean(null)) if null else np.nan


def _neuron_rows(kind, data, spaces, pairs, k, gen, matches) -> list[dict]:
    """Neuron matching of one kind in each matched layer pair (module doc, 5); fills
    ``matches``."""
    rows = []
    emb, raw = spaces["embedding"], spaces.get("raw")
    for la, lb in pairs:
        r, c, corr, null = _neuron_corr(emb.units[kind], emb.null_grams[kind], data["embedding"][kind].gram, la, lb)
        matches[(kind, la, lb)] = np.full(len(data["embedding"][kind].vecs_a[la]), -1)
        matches[(kind, la, lb)][r] = c
        raw_corr = raw_null = np.nan
        if raw is not None:
            _, _, raw_corr, raw_null = _neuron_corr(raw.units[kind], raw.null_grams[kind],
                                                    data["raw"][kind].gram, la, lb)
        d = data["embedding"][kind]
        X, Y = d.vecs_a[la][r], d.vecs_b[lb]
        rand = torch.randperm(Y.shape[0], generator=gen)[: len(c)]
        rows.append({
            "kind": kind, "layer_a": la, "layer_b": lb, "n_matched": len(r),
            "neuron_corr": corr, "neuron_corr_null": null,
            "neuron_corr_raw": raw_corr, "neuron_corr_raw_null": raw_null,
            "topk_overlap": topk_overlap(X, d.tokens_a, Y[c], d.tokens_b, k),
            "topk_overlap_random": topk_overlap(X, d.tokens_a, Y[rand], d.tokens_b, k),
        })
    return rows


@torch.no_grad()
def align_models(
    model_a: HookedTransformer, model_b: HookedTransformer, *, kinds: list[str] | None = None,
    reduce: str = "mean", n_permutations: int = 20, seed: int = 0, k: int = 20,
    n_neuron_null: int = 5, raw_permutations: int | None = None,
) -> Alignment:
    """Align the layers (and, within matched layers, the neurons) of two models (module doc).

    The raw baseline runs the same pipeline with identity token matrices (rows = d_model
    coordinates), so its null permutes model b's coordinates."""
    kinds = check_kinds(model_a, model_b, kinds)
    shared = shared_vocabulary(model_a, model_b)
    data = {"embedding": {kd: kind_data(model_a, model_b, kd, shared) for kd in kinds}}
    if model_a.cfg.d_model == model_b.cfg.d_model:
        eye = torch.eye(model_a.cfg.d_model, dtype=torch.float64)
        data["raw"] = {kd: KindData(kind=kd, vecs_a=d.vecs_a, vecs_b=d.vecs_b, tokens_a=eye,
                                    tokens_b=eye) for kd, d in data["embedding"].items()}
    n_perm = {"embedding": n_permutations,
              "raw": n_permutations if raw_permutations is None else raw_permutations}
    spaces = {space: score_space(dd, reduce=reduce, n_permutations=n_perm[space],
                                 n_neuron_null=min(n_neuron_null, n_perm[space]), seed=seed)
              for space, dd in data.items()}
    pairs, _ = match_layers(spaces["embedding"].scores["mean"])
    gen = torch.Generator().manual_seed(seed + 1)
    neuron_rows: list[dict] = []
    neuron_matches: dict[tuple[str, int, int], np.ndarray] = {}
    for kd in kinds:
        neuron_rows += _neuron_rows(kd, data, spaces, pairs, k, gen, neuron_matches)
    return Alignment(kinds=kinds, shared=shared, reduce=reduce, spaces=spaces,
                     neurons=pd.DataFrame(neuron_rows), neuron_matches=neuron_matches)
