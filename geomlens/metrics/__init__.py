"""Metrics: ranking (NDCG@k, top-k), correlation (Spearman), divergences (JSD, KL), statistics."""

from geomlens.metrics.correlation import average_ranks, spearman, spearman_from_ranks
from geomlens.metrics.divergence import (
    js_divergence,
    js_divergence_fast,
    js_divergence_from_logprobs,
    kl_divergence,
)
from geomlens.metrics.ranking import (
    GAINS,
    IdealDCG,
    TopKNDCG,
    ideal_dcg,
    ndcg_at_k,
    ndcg_topk,
    overlap_at_k,
    register_gain,
    tail_dcg_bounds,
    top1_agreement,
    topk_overlap,
)
from geomlens.metrics.stats import (
    bootstrap_ci,
    permutation_p_value,
    random_matrix_like,
    random_permutations,
)

__all__ = [
    "GAINS", "IdealDCG", "TopKNDCG", "average_ranks", "bootstrap_ci", "ideal_dcg",
    "js_divergence", "js_divergence_fast", "js_divergence_from_logprobs", "kl_divergence", "ndcg_at_k", "ndcg_topk",
    "overlap_at_k", "permutation_p_value", "random_matrix_like", "random_permutations",
    "register_gain", "spearman", "spearman_from_ranks", "tail_dcg_bounds", "top1_agreement", "topk_overlap",
]
