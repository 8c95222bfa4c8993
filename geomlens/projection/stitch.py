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
        h = model.ln_final(resid)  # [batch, pos, d_model]
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
