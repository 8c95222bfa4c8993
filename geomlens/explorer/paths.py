"""The trajectory panel: one position's path h^0 … h^L in two dimensions, among its nearest
token embeddings.

h^0 = ``blocks.0.hook_resid_pre`` (the embedding) and h^l = ``blocks.{l-1}.hook_resid_post``.
The plane is the path's own first two principal components (SVD of the path's points centred
on their mean); the ``n_near`` nearest ``W_E`` rows (Euclidean, `geomlens.geometry.distances`)
of every point are projected onto the same plane. ``explained`` is the share of the path's
variance the plane keeps (read the picture with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from geomlens.geometry.distances import sq_distances


@dataclass
class Path2D:
    points: np.ndarray  # [n_layers + 1, 2]
    near_ids: np.ndarray  # [n_near_total] unique W_E rows
    near_points: np.ndarray  # [n_near_total, 2]
    explained: float


@torch.no_grad()
def paths_2d(
    paths: Float[Tensor, "pos n_points d_model"], W_E: Float[Tensor, "d_vocab d_model"],
    near: Int[Tensor, "pos n_points n_near"],
) -> list[Path2D]:
    """Project each path and its points' nearest embedding rows ``near`` onto the path's own
    PCA plane (one batched SVD)."""
    paths = paths.float()
    mean = paths.mean(1, keepdim=True)
    _, s, vh = torch.linalg.svd(paths - mean, full_matrices=False)
    plane = vh[:, :2].transpose(1, 2)  # [pos, d_model, <=2]
    if plane.shape[2] < 2:
        plane = torch.cat([plane, plane.new_zeros(*plane.shape[:2], 2 - plane.shape[2])], 2)
    var = s.pow(2)
    explained = torch.where(var.sum(1) > 0, var[:, :2].sum(1) / var.sum(1).clamp_min(1e-30), 1.0)
    points = torch.bmm(paths - mean, plane)
    out = []
    for p in range(paths.shape[0]):
        ids = torch.unique(near[p].reshape(-1))
        out.append(Path2D(points=points[p].numpy(), near_ids=ids.numpy(),
                          near_points=((W_E[ids].float() - mean[p]) @ plane[p]).numpy(),
                          explained=float(explained[p])))
    return out


def nearest_rows(h: Float[Tensor, "n d_model"], W_E: Tensor, n_near: int) -> Int[Tensor, "n n_near"]:
    return torch.topk(sq_distances(h.float(), W_E.float()), n_near, dim=-1, largest=False).indices


def sequence_paths(
    resid: dict[int, Tensor], W_E: Tensor, *, n_near: int = 2,
    known: Int[Tensor, "n_layers pos n_near"] | None = None,
) -> list[Path2D]:
    """`paths_2d` of every position of one sequence (``resid``: layer -> [pos, d_model], -1 =
    the embedding). ``known``: the nearest rows of h^1..h^L already found (the grid's
    distance_raw top tokens of each resid_post row); only h^0's are then searched."""
    layers = sorted(resid)
    stacked = torch.stack([resid[i] for i in layers], 1)  # [pos, n_points, d_model]
    if known is None:
        near = torch.stack([nearest_rows(resid[i], W_E, n_near) for i in layers], 1)
    else:
        first = nearest_rows(resid[layers[0]], W_E, n_near)[None]
        near = torch.cat([first, known[..., :n_near]]).transpose(0, 1)
    return paths_2d(stacked, W_E, near)
