"""A classifier carried from model A to model B without training (Dar et al. 2022, stitching).

Dar et al.'s sentiment-analysis notebook maps B's last hidden state into A's space with the
map ``emb2 @ pinv(emb1)`` (emb = d_model x vocab) and applies A's classifier there. With token
matrices E (rows = tokens of the shared vocabulary, `geomlens.projection.alignment.shared_vocabulary`)
that is x_A = M x_B with

    M = E_A⁺ E_B        [d_A, d_B]   (E_A⁺ the Moore-Penrose pseudo-inverse)

i.e. B's state read as token scores E_B x_B, and the A-state whose token scores are closest in
least squares. A linear classifier (W, b) on A's features therefore becomes (W M, b) on B's:
`translate` carries the parameters; B receives no gradient.

Features (`segment_features`): the mean over a segment's positions of ln_final(resid_post of the
last block), the state the LM head reads. The classifier (`fit_classifier`) is multinomial
logistic regression (sklearn, lbfgs) on standardised features, folded back into raw features
(W/σ, b − W μ/σ) so that it is linear in the model's residual stream. Null (`permuted_accuracy`):
the same translation with B's shared-token rows permuted, E_B[π].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.backend import view_of

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


@dataclass(kw_only=True)
class LinearClassifier:
    """logits = features @ W.T + b, on raw (unstandardised) features."""

    W: Float[np.ndarray, "n_classes d_model"]
    b: Float[np.ndarray, "n_classes"]

    def predict(self, X: Float[np.ndarray, "n d_model"]) -> Int[np.ndarray, "n"]:
        return np.argmax(X @ self.W.T + self.b, axis=1)

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == y))


def fit_classifier(X: np.ndarray, y: np.ndarray, *, C: float = 1.0, seed: int = 0) -> LinearClassifier:
    """Multinomial logistic regression on standardised X, returned in raw-feature form."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = X.mean(0), X.std(0) + 1e-8
    clf = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit((X - mu) / sd, y)
    W = clf.coef_ / sd
    return LinearClassifier(W=W, b=clf.intercept_ - W @ mu)


@torch.no_grad()
def segment_features(
    model: HookedTransformer, sequences: list[Int[Tensor, "_pos"]], *, batch_size: int = 16
) -> Float[np.ndarray, "n_segments d_model"]:
    """Mean over positions of ln_final(last resid_post) per segment (right padding masked)."""
    from geomlens.data.batching import batch_sequences

    out = []
    for tokens, lengths in batch_sequences(sequences, batch_size=batch_size):
        resid = model(tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
        h = view_of(model).ln_final(resid)  # [batch, pos, d_model]
        mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).to(h)
        out.append(((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).double().cpu())
    return torch.cat(out).numpy()


def pinv_rows(E_A: Float[Tensor, "n_tokens d_a"]) -> Float[Tensor, "d_a n_tokens"]:
    """E_A⁺ in float64."""
    return torch.linalg.pinv(E_A.double())


def translation(E_A: Float[Tensor, "n_tokens d_a"], E_B: Float[Tensor, "n_tokens d_b"]) -> Float[Tensor, "d_a d_b"]:
    """M = E_A⁺ E_B: B's state x_B maps to A's space as M x_B (module doc)."""
    return pinv_rows(E_A) @ E_B.double()


def translate(clf: LinearClassifier, M: Float[Tensor, "d_a d_b"]) -> LinearClassifier:
    """A's classifier as one on B's features: (W M, b)."""
    return LinearClassifier(W=clf.W @ M.cpu().numpy(), b=clf.b.copy())


def permuted_accuracies(
    clf: LinearClassifier, E_A: Tensor, E_B: Tensor, X_b: np.ndarray, y: np.ndarray, *,
    n_permutations: int, seed: int,
) -> np.ndarray:
    """Test accuracy of the translation through E_B with its token rows permuted, per permutation.

    W E_A⁺ is formed once ([n_classes, n_tokens]); each permutation then costs one
    [n_classes, n_tokens] x [n_tokens, d_b] product: (W E_A⁺) E_B[π] = W (E_A⁺ E_B[π]), computed
    as (W E_A⁺)[:, π⁻¹] E_B (permuting n_classes columns' entries instead of E_B's rows)."""
    WP = torch.from_numpy(clf.W) @ pinv_rows(E_A)
    E_B = E_B.double()
    gen = torch.Generator().manual_seed(seed)
    out = np.empty(n_permutations)
    for i in range(n_permutations):
        perm = torch.randperm(E_B.shape[0], generator=gen)
        out[i] = LinearClassifier(W=(WP[:, perm.argsort()] @ E_B).numpy(), b=clf.b).accuracy(X_b, y)
    return out


def wilson(acc: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``acc`` over ``n`` trials."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    return float(centre - half), float(centre + half)


def stitch_rows(
    feats: dict[str, np.ndarray], tokens: dict[str, Tensor], y: np.ndarray, *,
    split_seeds: list[int], test_fraction: float = 0.5, C: float = 1.0, n_permutations: int = 999,
    seed: int = 0, both_directions: bool = True,
) -> list[dict]:
    """One row per (split seed, direction) of accuracies on the test segments (the columns are
    defined in `geomlens.projection.stitch_command`): ``feats`` and ``tokens`` hold model
    "a"'s and "b"'s segment features and shared-token rows, ``y`` the domain labels."""
    from sklearn.model_selection import train_test_split

    dirs = [("a", "b")] + ([("b", "a")] if both_directions else [])
    rows = []
    for s in split_seeds:
        tr, te = train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=s)
        for src, dst in dirs:
            clf = fit_classifier(feats[src][tr], y[tr], C=C, seed=s)
            moved = translate(clf, translation(tokens[src], tokens[dst]))
            ceiling = fit_classifier(feats[dst][tr], y[tr], C=C, seed=s)
            perm = permuted_accuracies(clf, tokens[src], tokens[dst], feats[dst][te], y[te],
                                       n_permutations=n_permutations, seed=seed + s)
            row = {"split_seed": s, "direction": f"{src}->{dst}", "n_train": len(tr), "n_test": len(te),
                   "chance": 1 / len(np.unique(y)),
                   "acc_a": clf.accuracy(feats[src][te], y[te]),
                   "acc_translated": moved.accuracy(feats[dst][te], y[te]),
                   "acc_ceiling": ceiling.accuracy(feats[dst][te], y[te]),
                   "acc_perm_mean": float(perm.mean()) if len(perm) else np.nan,
                   "acc_perm_q95": float(np.quantile(perm, 0.95)) if len(perm) else np.nan,
                   "n_permutations": len(perm)}
            row["p"] = float((1 + (perm >= row["acc_translated"]).sum()) / (1 + len(perm))) if len(perm) else np.nan
            for key in ("acc_a", "acc_translated", "acc_ceiling"):
                row[f"{key}_lo"], row[f"{key}_hi"] = wilson(row[key], len(te))
            rows.append(row)
    return rows


def seed_summary(table) -> dict:
    """Per direction: mean over split seeds of each accuracy, with a t 95% interval."""
    from scipy import stats

    out = {}
    for direction, df in table.groupby("direction"):
        entry = {}
        for key in ("acc_a", "acc_translated", "acc_ceiling", "acc_perm_mean", "p"):
            v = df[key].to_numpy(dtype=float)
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
            entry[key] = {"mean": float(v.mean()), "ci_low": float(v.mean() - half),
                          "ci_high": float(v.mean() + half)}
        out[direction] = entry
    return out
