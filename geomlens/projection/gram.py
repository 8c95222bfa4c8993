"""Pearson correlation of projected parameters through the Gram matrix E_aᵀ E_b (Dar et al. 2022).

Parameter vectors x (model a, d_a) and y (model b, d_b) project onto a shared vocabulary of N
tokens as p = E_a x and q = E_b y (rows of E = tokens). Pearson correlation centres p and q over
the tokens, and centring commutes with the projection: p − mean(p) = Ẽ_a x with Ẽ = E minus its
column means. Hence

    corr(x, y) = xᵀ K_ab y / sqrt(xᵀ K_aa x · yᵀ K_bb y),    K_ab = Ẽ_aᵀ Ẽ_b   (d_a x d_b)

and no N-sized vector is ever formed: `EmbeddingGram.pearson` returns the full [n, m]
correlation matrix of two vector sets from three small Gram matrices (float64).

A random permutation π of model b's token rows (the permutation null) changes only K_ab, to
Ẽ_aᵀ Ẽ_b[π]. The paper's baseline, Pearson over the raw d_model coordinates, is the same formula
with E = I (`EmbeddingGram.identity`): only meaningful when d_a = d_b.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


def centred(E: Float[Tensor, "n_tokens d"]) -> Float[Tensor, "n_tokens d"]:
    """E minus its column means (over the tokens), in float64."""
    E = E.double()
    return E - E.mean(0, keepdim=True)


@dataclass(kw_only=True)
class EmbeddingGram:
    """The three Gram matrices of two centred token matrices over a shared vocabulary."""

    K_ab: Float[Tensor, "d_a d_b"]
    """Ẽ_aᵀ Ẽ_b."""
    K_aa: Float[Tensor, "d_a d_a"]
    """Ẽ_aᵀ Ẽ_a."""
    K_bb: Float[Tensor, "d_b d_b"]
    """Ẽ_bᵀ Ẽ_b."""

    @classmethod
    def from_token_matrices(
        cls,
        E_a: Float[Tensor, "n_tokens d_a"],
        E_b: Float[Tensor, "n_tokens d_b"],
    ) -> EmbeddingGram:
        """Kernels of row-aligned token matrices (row i of both = the same token)."""
        if E_a.shape[0] != E_b.shape[0]:
            raise ValueError(f"token matrices have {E_a.shape[0]} and {E_b.shape[0]} rows")
        Ca, Cb = centred(E_a), centred(E_b)
        return cls(K_ab=Ca.T @ Cb, K_aa=Ca.T @ Ca, K_bb=Cb.T @ Cb)

    @classmethod
    def identity(cls, d: int, device: str | torch.device = "cpu") -> EmbeddingGram:
        """E = I_d: Pearson over the raw coordinates (the paper's baseline)."""
        C = torch.eye(d, dtype=torch.float64, device=device) - 1.0 / d
        return cls(K_ab=C, K_aa=C, K_bb=C)

    def with_permutation(
        self, C_a: Float[Tensor, "n_tokens d_a"], C_b: Float[Tensor, "n_tokens d_b"],
        perm: Int[Tensor, "n_tokens"],
    ) -> EmbeddingGram:
        """The same Gram matrices with token i of a paired with token perm[i] of b (K_aa, K_bb are
        permutation invariant); C_a, C_b are the `centred` token matrices."""
        return EmbeddingGram(K_ab=C_a.T @ C_b[perm.to(C_b.device)], K_aa=self.K_aa, K_bb=self.K_bb)

    def unit_a(self, X: Float[Tensor, "n d_a"]) -> Float[Tensor, "n d_a"]:
        """Rows of X scaled so their centred projections have unit norm (xᵀ K_aa x = 1)."""
        X = X.double().to(self.K_aa.device)
        return X / ((X @ self.K_aa) * X).sum(-1, keepdim=True).clamp_min(0).sqrt()

    def unit_b(self, Y: Float[Tensor, "m d_b"]) -> Float[Tensor, "m d_b"]:
        """Rows of Y scaled so that yᵀ K_bb y = 1."""
        Y = Y.double().to(self.K_bb.device)
        return Y / ((Y @ self.K_bb) * Y).sum(-1, keepdim=True).clamp_min(0).sqrt()

    def cross(self, X_unit: Float[Tensor, "n d_a"], Y_unit: Float[Tensor, "m d_b"]) -> Float[Tensor, "n m"]:
        """Correlations of `unit_a` / `unit_b` rows (for loops that reuse the normalisation)."""
        return X_unit @ self.K_ab @ Y_unit.T

    def pearson(
        self, X: Float[Tensor, "n d_a"], Y: Float[Tensor, "m d_b"]
    ) -> Float[Tensor, "n m"]:
        """corr(E_a x_i, E_b y_j) for every pair of rows (NaN where a projection is constant)."""
        return self.cross(self.unit_a(X), self.unit_b(Y))

