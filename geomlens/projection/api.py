"""The projection thread in a notebook: loaded models in, result objects out
(`geomlens.projection.result`); the commands run the same functions and ``save`` their results.

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    geomlens.project(model, ["mlp_out"], layers=[20], neurons=range(4))   # ProjectionResult
    geomlens.evidence(model, layers=[0, 15, 29], n_permutations=999)      # EvidenceResult
    geomlens.evidence(model, ["some text", "more text"], layers=[3])      # over your own text
    geomlens.stitch(model_a, model_b)                                     # StitchResult
    geomlens.align(model_a, model_b, n_permutations=99)                   # AlignmentResult
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from geomlens.data.inputs import TextInput, as_sequences
from geomlens.models.load import model_info
from geomlens.projection.alignment import align_models
from geomlens.projection.evidence import evidence_table
from geomlens.projection.kinds import PAIR_KINDS, available_kinds, token_matrix
from geomlens.projection.project import frequent_token_ids, project_parameters
from geomlens.projection.result import (
    AlignmentResult,
    EvidenceResult,
    ProjectionResult,
    StitchResult,
)
from geomlens.projection.stitch import segment_features, stitch_rows

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def _name(model: HookedTransformer) -> str:
    """The model's name; a run directory by its last component."""
    name = str(model_info(model).get("name"))
    return Path(name).name if "/" in name and Path(name).exists() else name


def project(
    model: HookedTransformer, kinds: Sequence[str] | None = None, layers: Sequence[int] | None = None,
    *, heads: Sequence[int] | None = None, neurons: Sequence[int] | None = range(10),
    through: str | None = None, k: int = 20, pair_tokens: int | None = 8192,
) -> ProjectionResult:
    """Project parameters onto the vocabulary (`geomlens.projection.project.project_parameters`;
    ``kinds`` None = every kind the model has). ov/qk token pairs are searched exactly among the
    ``pair_tokens`` most frequent tokens of the bundled text (None = the whole vocabulary)."""
    kinds = list(kinds) if kinds is not None else available_kinds(model)
    pair_ids = None
    if pair_tokens is not None and set(kinds) & set(PAIR_KINDS):
        pair_ids = frequent_token_ids(model, _name(model), pair_tokens)
    table = project_parameters(model, kinds, layers, heads=heads, neurons=neurons, through=through,
                               k=k, pair_token_ids=pair_ids)
    search = table.attrs.pop("pair_search", [])
    return ProjectionResult(table=table, model_name=_name(model), pair_search=search,
                            pair_tokens=None if pair_ids is None else len(pair_ids))


def evidence(
    model: HookedTransformer, texts: TextInput | None = None, *, layers: Sequence[int] | None = None,
    n_segments: int = 8, max_tokens: int = 64, **kw: Any,
) -> EvidenceResult:
    """Dar et al.'s evidence table (`geomlens.projection.evidence.evidence_table`; ``kw`` are its
    keywords: recall_kinds, pairs, k, k2, k_abs, n_active, n_positions, n_units,
    n_permutations, seed). The hidden states are collected over ``texts`` (a text, a list of
    texts or token ids, every token kept) or, when None, over ``n_segments`` segments per domain
    of the bundled eval corpus, their first ``max_tokens`` tokens each."""
    from geomlens.projection.evidence_command import corpus_sequences

    if texts is None:
        seqs, inputs, _ = corpus_sequences(model, n_segments, max_tokens)
    else:
        seqs = as_sequences(model, texts, where="evidence")
        inputs = {"n_segments": len(seqs), "n_tokens": int(sum(len(s) for s in seqs)),
                  "source": "texts given"}
    layers = list(layers) if layers is not None else list(range(model.cfg.n_layers))
    table = evidence_table(model, seqs, layers, **kw)
    n_perm = int(table["n_permutations"].iloc[0]) if len(table) else kw.get("n_permutations", 999)
    return EvidenceResult(table=table, model_name=_name(model), layers=layers,
                          n_permutations=n_perm, inputs=inputs)


def stitch(
    model_a: HookedTransformer, model_b: HookedTransformer, *, n_segments: int = 60,
    max_tokens: int = 32, split_seeds: Sequence[int] = (0, 1, 2), test_fraction: float = 0.5,
    C: float = 1.0, through: str = "W_U", n_permutations: int = 999, seed: int = 0,
    both_directions: bool = True,
) -> StitchResult:
    """A 5-domain classifier fit on model A's features, carried into model B through
    E_A⁺ E_B (B untrained), against chance, B's rows permuted, a classifier fit on B and A's own
    accuracy (`geomlens.projection.stitch_command` defines every column)."""
    from geomlens.data import DOMAINS
    from geomlens.projection.alignment import shared_vocabulary
    from geomlens.projection.evidence_command import corpus_sequences

    models = {"a": model_a, "b": model_b}
    shared = shared_vocabulary(model_a, model_b)
    feats, inputs = {}, {}
    for key, model in models.items():
        seqs, inputs[key], domains = corpus_sequences(model, n_segments, max_tokens)
        feats[key] = segment_features(model, seqs)
    y = np.array([DOMAINS.index(d) for d in domains])
    rows_of = {"a": shared.rows_a, "b": shared.rows_b}
    tokens = {key: token_matrix(m, through).detach()[rows_of[key].to(m.W_E.device)].cpu()
              for key, m in models.items()}
    table = pd.DataFrame(stitch_rows(feats, tokens, y, split_seeds=list(split_seeds),
                                     test_fraction=test_fraction, C=C, n_permutations=n_permutations,
                                     seed=seed, both_directions=both_directions))
    return StitchResult(table=table, model_a=_name(model_a), model_b=_name(model_b),
                        shared_vocab=shared.note, inputs=inputs)


def align(model_a: HookedTransformer, model_b: HookedTransformer, **kw: Any) -> AlignmentResult:
    """Align two models' layers and neurons in embedding space
    (`geomlens.projection.alignment.align_models`; ``kw`` are its keywords)."""
    return AlignmentResult(alignment=align_models(model_a, model_b, **kw), name_a=_name(model_a),
                           name_b=_name(model_b))
