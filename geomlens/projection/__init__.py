"""Parameters in embedding space (Dar et al. 2022, "Analyzing Transformers in Embedding Space").

    from geomlens.projection import project_parameters, step_attribution, align_models
    table = project_parameters(model, ["mlp_out", "ov"], layers=[3], k=20)

Modules: `kinds` (what is projected, through which token matrix), `topk` (exact top-k without a
vocab x vocab matrix), `project` (the projection table), `attribution` (the movement view),
`gram` (Pearson through the Gram matrix E_aᵀE_b), `alignment` (layer and neuron matching),
`evidence` and `overlap` (Dar et al.'s evidence protocol), `stitch` (a classifier carried between
models), `api` and `result` (the notebook functions and their result objects), `config`,
`command`, `evidence_command`, `stitch_command` (the commands), `figures`.
"""

from geomlens.projection.alignment import Alignment, align_models, shared_vocabulary
from geomlens.projection.api import align, evidence, project, stitch
from geomlens.projection.attribution import component_parts, step_attribution
from geomlens.projection.command import run_align, run_project
from geomlens.projection.config import (
    AlignConfig,
    ProjectConfig,
    parse_index_spec,
    validate_align,
    validate_project,
)
from geomlens.projection.gram import EmbeddingGram
from geomlens.projection.kinds import KINDS, available_kinds, parameter_vectors, token_matrix
from geomlens.projection.project import (
    COLUMNS,
    project_pairs,
    project_parameters,
    project_vectors,
    top_tokens_table,
)
from geomlens.projection.result import (
    AlignmentResult,
    EvidenceResult,
    ProjectionResult,
    StitchResult,
)
from geomlens.projection.topk import factored_topk, vector_topk

__all__ = [
    "COLUMNS", "KINDS", "AlignConfig", "Alignment", "AlignmentResult", "EmbeddingGram",
    "EvidenceResult", "ProjectConfig", "ProjectionResult", "StitchResult", "align", "evidence",
    "project", "stitch",
    "align_models", "available_kinds", "component_parts", "factored_topk", "parameter_vectors",
    "parse_index_spec", "project_pairs", "project_parameters", "project_vectors", "run_align",
    "run_project", "shared_vocabulary", "step_attribution", "token_matrix", "validate_align",
    "top_tokens_table", "validate_project", "vector_topk",
]
