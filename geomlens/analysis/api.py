"""`analyze(model, texts | cfg)`: the distance-vs-probability analysis in memory, for notebooks.

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    result = geomlens.analyze(model, texts=["The capital of France is Paris.", "..."])
    result                                   # HTML headline (Table 6.1 rows with CIs)
    result.plot("metrics_by_score")          # a Figure
    result = geomlens.analyze(model, n_segments=4, max_tokens=64)  # the bundled corpus
    result.save("runs/x")                    # the files ``geomlens analyze`` writes

The same config runs to a run directory with ``geomlens.run("analyze", cfg, "runs/x")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.pipeline import analyze_tokens
from geomlens.analysis.result import AnalysisResult
from geomlens.data.request import config_and_segments

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def analyze(
    model: HookedTransformer, cfg: AnalyzeConfig | Any = None, *, texts: Any = None,
    **overrides: Any,
) -> AnalysisResult:
    """Analyze ``texts`` (or the text that ``cfg`` selects) with ``model``.

    Args:
        model: A HookedTransformer with a tokenizer (e.g. from `geomlens.load_model`).
        cfg: The analysis config (None = the defaults; ``cfg.model`` is not used), or the texts
            themselves in place of ``texts=``.
        texts: A text, a list of texts or token ids (`geomlens.data.inputs.as_sequences`): one
            segment each, named "0", "1", ... in the domain "text"; each is analysed whole
            unless ``max_tokens=`` is given (longer ones are then cut, with one warning line).
            A path to a .jsonl file is the config's ``texts`` field (the CLI's ``--texts``;
            `geomlens.data.request`).
        overrides: Field values that replace ``cfg``'s (``n_segments=4``), validated by
            `geomlens.config.build_config` like CLI flags.

    Returns:
        The `AnalysisResult`: per-segment metrics, controls, its ``summary``, ``table()``,
        ``plot()`` and ``save(run_dir)``; ``result.cfg`` is the config used.
    """
    cfg, seqs, ids, domains = config_and_segments(model, AnalyzeConfig, cfg, texts, where="analyze",
                                                  **overrides)
    return analyze_tokens(model, seqs, cfg, segment_ids=ids, domains=domains)
