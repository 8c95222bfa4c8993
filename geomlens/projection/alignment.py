"""Aligning two models' parameters in embedding space (Dar et al. 2022).

Two models that share a tokenizer (not necessarily d_model or depth) are compared on the tokens
both can represent (`shared_vocabulary`). For each vector kind κ (default: the MLP kinds):

  1. Every parameter vector is projected through its kind's token matrix (W_E for read kinds,
     W_U for write kinds; `geomlens.projection.kinds`) restricted to the shared tokens, and
     Pearson correlations between projections of a and b are computed through the kernel
     (`geomlens.projection.kernel`): no vocabulary-sized vector is formed.
  2. Layer scores: S_κ[la, lb] = mean over all pairs (i ∈ la, j ∈ lb) of |corr(x_i, y_j)|
     (``reduce="mean"``, the paper's), or ``"best"``: the mean over i of max_j |corr| and over j
     of max_i |corr|, averaged. ``mean`` over kinds gives S_mean.
  3. Layers are matched by the Hungarian algorithm (`scipy.optimize.linear_sum_assignment`,
     maximising the summed score). matched_score = mean S over the matched pairs.
  4. Null: the same pipeline after a random permutation of b's shared-token rows (token i of a
     paired with token π(i) of b), ``n_permutations`` times; p = (1 + #{null ≥ observed}) /
     (1 + n). Baseline (paper's): the same pipeline on the raw d_model vectors (kernel = I), only
     when d_model matches.
  5. Neuron matching within each matched layer pair (of S_mean): Hungarian on the |corr| neuron x
     neuron matrix; neuron_corr = mean matched |corr| (embedding, null, raw), and top-k overlap =
     |top-k tokens of x_i ∩ top-k tokens of y_π(i)| / k averaged over matched neurons, against
     the same for a random pairing of the neurons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from transformer_lens import HookedTransformer

from geomlens.errors import InputError
from geomlens.models.token_map import token_map
from geomlens.projection.kernel import EmbeddingKernel, centred
from geomlens.projection.kinds import KINDS, available_kinds, parameter_vectors, token_matrix

logger = logging.getLogger(__name__)

REDUCERS = ("mean", "best")
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
    left out), matched through the tokenizer ids (`geomlens.models.token_map`)."""
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
    kernel: EmbeddingKernel = field(init=False)

    def __post_init__(self) -> None:
        self.kernel = EmbeddingKernel.from_token_matrices(self.tokens_a, self.tokens_b)


def kind_data(model_a, model_b, kind: str, shared: SharedVocab) -> KindData:
    vecs = [[parameter_vectors(m, kind, layer).vectors.detach() for layer in range(m.cfg.n_layers)]
            for m in (model_a, model_b)]
    T_a = token_matrix(model_a, _through(model_a, kind)).detach()[shared.rows_a.to(model_a.W_E.device)]
    T_b = token_matrix(model_b, _through(model_b, kind)).detach()[shared.rows_b.to(model_b.W_E.device)]
    return KindData(kind=kind, vecs_a=vecs[0], vecs_b=vecs[1], tokens_a=T_a, tokens_b=T_b)


def layer_scores(
    kernel: EmbeddingKernel, units_a: list[Tensor], units_b: list[Tensor], reduce: str = "mean"
) -> np.ndarray:
    """S[la, lb] from `EmbeddingKernel.unit_a` / ``unit_b`` vectors per layer (module doc, 2)."""
    if reduce not in REDUCERS:
        raise InputError(f"reduce must be one of {REDUCERS}, not {reduce!r}")
    S = np.zeros((len(units_a), len(units_b)))
    for i, Xa in enumerate(units_a):
        XaK = Xa @ kernel.K_ab
        for j, Xb in enumerate(units_b):
            C = (XaK @ Xb.T).abs()
            if reduce == "mean":
                S[i, j] = float(C.mean())
            else:
                S[i, j] = 0.5 * float(C.max(1).values.mean() + C.max(0).values.mean())
    return S


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
class Alignment:
    """Everything `align_models` measured (module doc); `layer_table` and ``neurons`` are the
    tables, ``scores`` the layer x layer matrices (key: a kind or "mean")."""

    kinds: list[str]
    shared: SharedVocab
    reduce: str
    scores: dict[str, np.ndarray]
    """Embedding-space layer scores S (rows: layers of a, columns: layers of b)."""
    raw_scores: dict[str, np.ndarray]
    """The same on raw d_model vectors (empty when d_model differs)."""
    null_scores: dict[str, np.ndarray]
    """Layer scores averaged over the permutation null."""
    null_matched: dict[str, np.ndarray]
    """matched_score of each null permutation."""
    neurons: pd.DataFrame
    """Neuron matching per kind and matched layer pair."""
    neuron_matches: dict[tuple[str, int, int], np.ndarray]
    """(kind, layer_a, layer_b) -> the neuron of b matched to each neuron of a (−1 = none)."""

    def layer_table(self) -> pd.DataFrame:
        """One row per (key, space): matched pairs, matched/mean score, identity accuracy
        (same depth only), and for embedding space the null's mean, std and p-value."""
        rows = []
        for key, S in self.scores.items():
            for space, M in (("embedding", S), ("raw", self.raw_scores.get(key))):
                if M is None:
                    continue
                pairs, matched = match_layers(M)
                null = self.null_matched[key] if space == "embedding" else None
                same_depth = M.shape[0] == M.shape[1]
                rows.append({
                    "kind": key, "space": space, "matched_score": matched,
                    "mean_score": float(M.mean()),
                    "identity_accuracy": (float(np.mean([a == b for a, b in pairs]))
                                          if same_depth else np.nan),
                    "null_mean": float(null.mean()) if null is not None and len(null) else np.nan,
                    "null_std": float(null.std()) if null is not None and len(null) else np.nan,
                    "p_value": (float((1 + (null >= matched).sum()) / (1 + len(null)))
                                if null is not None and len(null) else np.nan),
                    "pairs": " ".join(f"{a}-{b}" for a, b in pairs),
                })
        return pd.DataFrame(rows)


def _units(kernel: EmbeddingKernel, data: KindData) -> tuple[list[Tensor], list[Tensor]]:
    return [kernel.unit_a(X) for X in data.vecs_a], [kernel.unit_b(Y) for Y in data.vecs_b]


def _neuron_rows(data, units, raw_units, null_kernels, pairs, k, gen, matches) -> list[dict]:
    """Neuron matching of one kind in each matched layer pair (module doc, 5); fills
    ``matches``."""
    rows = []
    for la, lb in pairs:
        Ua, Ub = units[0][la], units[1][lb]
        r, c, corr = match_neurons(data.kernel.cross(Ua, Ub))
        matches[(data.kind, la, lb)] = np.full(Ua.shape[0], -1)
        matches[(data.kind, la, lb)][r] = c
        null = [match_neurons(kn.cross(Ua, Ub))[2] for kn in null_kernels]
        raw = match_neurons(raw_units[2].cross(raw_units[0][la], raw_units[1][lb]))[2] if raw_units else np.nan
        X, Y = data.vecs_a[la][r], data.vecs_b[lb]
        rand = torch.randperm(Y.shape[0], generator=gen)[: len(c)]
        rows.append({
            "kind": data.kind, "layer_a": la, "layer_b": lb, "n_matched": len(r),
            "neuron_corr": corr, "neuron_corr_null": float(np.mean(null)) if null else np.nan,
            "neuron_corr_raw": raw,
            "topk_overlap": topk_overlap(X, data.tokens_a, Y[c], data.tokens_b, k),
            "topk_overlap_random": topk_overlap(X, data.tokens_a, Y[rand], data.tokens_b, k),
        })
    return rows


@torch.no_grad()
def align_models(
    model_a: HookedTransformer, model_b: HookedTransformer, *, kinds: list[str] | None = None,
    reduce: str = "mean", n_permutations: int = 20, seed: int = 0, k: int = 20,
    n_neuron_null: int = 5,
) -> Alignment:
    """Align the layers (and, within matched layers, the neurons) of two models (module doc)."""
    kinds = check_kinds(model_a, model_b, kinds)
    shared = shared_vocabulary(model_a, model_b)
    data = {kd: kind_data(model_a, model_b, kd, shared) for kd in kinds}
    units = {kd: _units(d.kernel, d) for kd, d in data.items()}
    scores = {kd: layer_scores(d.kernel, *units[kd], reduce) for kd, d in data.items()}
    raw_units: dict[str, tuple] = {}
    raw_scores: dict[str, np.ndarray] = {}
    if model_a.cfg.d_model == model_b.cfg.d_model:
        eye = EmbeddingKernel.identity(model_a.cfg.d_model)
        for kd, d in data.items():
            raw_units[kd] = (*_units(eye, d), eye)
            raw_scores[kd] = layer_scores(eye, *raw_units[kd][:2], reduce)
    gen = torch.Generator().manual_seed(seed)
    centred_tokens = {kd: (centred(d.tokens_a), centred(d.tokens_b)) for kd, d in data.items()}
    null_sum = {kd: np.zeros_like(S) for kd, S in scores.items()}
    null_matched = {kd: [] for kd in [*kinds, "mean"]}
    null_kernels: dict[str, list[EmbeddingKernel]] = {kd: [] for kd in kinds}
    for p in range(n_permutations):
        perm = torch.randperm(len(shared.rows_a), generator=gen)
        S_p = {}
        for kd, d in data.items():
            kp = d.kernel.with_permutation(*centred_tokens[kd], perm)
            if p < n_neuron_null:
                null_kernels[kd].append(kp)
            S_p[kd] = layer_scores(kp, *units[kd], reduce)
            null_sum[kd] += S_p[kd]
        S_p["mean"] = np.mean([S_p[kd] for kd in kinds], axis=0)
        for key, S in S_p.items():
            null_matched[key].append(match_layers(S)[1])
    scores["mean"] = np.mean([scores[kd] for kd in kinds], axis=0)
    if raw_scores:
        raw_scores["mean"] = np.mean([raw_scores[kd] for kd in kinds], axis=0)
    null_scores = {kd: v / max(n_permutations, 1) for kd, v in null_sum.items()}
    if n_permutations:
        null_scores["mean"] = np.mean([null_scores[kd] for kd in kinds], axis=0)
    pairs, _ = match_layers(scores["mean"])
    neuron_rows, neuron_matches = [], {}
    for kd, d in data.items():
        neuron_rows += _neuron_rows(d, units[kd], raw_units.get(kd), null_kernels[kd], pairs, k,
                                    gen, neuron_matches)
    return Alignment(kinds=kinds, shared=shared, reduce=reduce, scores=scores,
                     raw_scores=raw_scores, null_scores=null_scores,
                     null_matched={kd: np.array(v) for kd, v in null_matched.items()},
                     neurons=pd.DataFrame(neuron_rows), neuron_matches=neuron_matches)
