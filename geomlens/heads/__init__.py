"""LM heads that replace ``model.unembed``: linear / tied baselines and KNN / kernel heads over
the model's own token embedding W_E. Select them by name::

    from geomlens.heads import install_head, list_heads
    install_head(model, "hybrid")

Importing this package registers the built-in heads (one family per module).
"""

# Registration order = table order: baselines, KNN heads, kernel heads, context MLP.
from geomlens.heads import linear, knn, kernel, context  # noqa: F401, I001  (register the heads)
from geomlens.heads.base import Head
from geomlens.heads.distance import distances, sq_distances
from geomlens.heads.registry import (
    HEADS,
    build_head,
    get_head_class,
    install_head,
    list_heads,
    register_head,
)

__all__ = [
    "HEADS",
    "Head",
    "build_head",
    "distances",
    "get_head_class",
    "install_head",
    "list_heads",
    "register_head",
    "sq_distances",
]
