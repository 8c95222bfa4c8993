"""`analyze(model, cfg)`: the distance-vs-probability analysis in memory, for notebooks.

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    result = geomlens.analyze(model, n_segments=4, max_tokens=64, controls=False)
    geomlens.table_frame(geomlens.summarize(result, result.cfg))

The same config runs to a run directory with ``geomlens.run("analyze", cfg, "runs/x")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.pipeline import AnalysisResult, analyze_tokens

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def analyze(
    model: HookedTransformer, cfg: AnalyzeConfig | None = None, **overrides: Any
) -> AnalysisResult:
    """Analyze the text that ``cfg`` selects (default: `AnalyzeConfig`'s) with ``model``.

    Args:
        model: A HookedTransformer with a tokenizer (e.g. from `geomlens.load_model`).
        cfg: The analysis config; None = the defaults. ``cfg.model`` is not used.
        overrides: Field values that replace ``cfg``'s (``n_segments=4``), validated by
            `geomlens.config.build_config` like CLI flags.

    Returns:
        The `AnalysisResult` (per-segment metrics, controls, per-token table if asked for),
        with ``result.cfg`` the config used.
    """
    import dataclasses

    from geomlens.config.build import build_config
    from geomlens.data.source import load_model_segments

    base = {} if cfg is None else {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    cfg = build_config(AnalyzeConfig, {**base, **overrides})
    seqs, ids, domains = load_model_segments(cfg, model)
    result = analyze_tokens(model, seqs, cfg, segment_ids=ids, domains=domains)
    result.cfg = cfg
    return result
