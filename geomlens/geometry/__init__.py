"""Geometry of the residual stream relative to the token embeddings."""

# trajectories and lenses (engineer D)
from geomlens.geometry.lens import distance_ranks, lens_ranks, ln_final_normalized, logit_ranks
from geomlens.geometry.trajectory import summarize_layers, trajectory, trajectory_stats

__all__ = [
    "distance_ranks",
    "lens_ranks",
    "ln_final_normalized",
    "logit_ranks",
    "summarize_layers",
    "trajectory",
    "trajectory_stats",
]
