"""geomlens: transformers read as movement through token-embedding space (TransformerLens 3.x).

The names a notebook needs, imported lazily (``import geomlens`` stays fast)::

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    df = geomlens.trajectory_stats(model, tokens)                  # one row per (pos, layer)
    result = geomlens.analyze(model, texts=["..."])  # Table 6.1 in memory: result.plot(), .save(dir)
    geomlens.ablate(model, ["..."], sweep=True)      # Δloss / ΔNDCG per layer x component
    geomlens.kv_losses(model, ["..."], layers="all")  # clean vs first-layer-K/V loss with CIs
    geomlens.summarize_layer_lens(geomlens.layer_ndcg(model, tokens))  # NDCG per layer and lens
    geomlens.project(model, ["mlp_out"], layers=[20])   # parameters in embedding space: .plot()
    trainer = geomlens.Trainer(geomlens.TrainConfig(head="hybrid"), "runs/x"); trainer.train()
    trainer.result()                  # TrainingResult: headline, .metrics, .plot("loss"), .save(dir)
    run_dir, summary = geomlens.run("analyze", geomlens.AnalyzeConfig(n_segments=4), "runs/a")

Deep imports (``geomlens.geometry.lens``...) are for internals and extensions.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geomlens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS: dict[str, str] = {
    # models and data
    "load_model": "geomlens.models.load", "model_info": "geomlens.models.load",
    "load_tokenizer": "geomlens.models.tokenizer", "micro_config": "geomlens.models.micro",
    "load_corpus": "geomlens.data.corpus", "tokenize_segments": "geomlens.data.batching",
    "load_segments": "geomlens.data.source", "TextSource": "geomlens.data.source",
    "batch_sequences": "geomlens.data.batching",
    # thread 1: trajectories, distance vs probability, ablations
    "trajectory": "geomlens.geometry.trajectory", "trajectory_stats": "geomlens.geometry.trajectory",
    "summarize_layers": "geomlens.geometry.trajectory",
    "headline_frame": "geomlens.analysis.headline",
    "layer_ndcg": "geomlens.analysis.layers", "summarize_layer_lens": "geomlens.analysis.layer_summary",
    "analyze": "geomlens.analysis.api", "analyze_tokens": "geomlens.analysis.pipeline",
    "AnalysisResult": "geomlens.analysis.result",
    "AnalyzeConfig": "geomlens.analysis.config", "summarize": "geomlens.analysis.summary",
    "table_frame": "geomlens.analysis.summary", "AblateConfig": "geomlens.ablation.config",
    "ablation_hooks": "geomlens.ablation.ablate", "ablate": "geomlens.ablation.api",
    "AblationResult": "geomlens.ablation.result",
    # the interactive view (needs the `explorer` extra: anywidget)
    "explore": "geomlens.explorer",
    # thread 2: LM heads and training
    "install_head": "geomlens.heads.registry", "list_heads": "geomlens.heads.registry",
    "TrainConfig": "geomlens.training.config", "Trainer": "geomlens.training.loop",
    "TrainingResult": "geomlens.training.result", "nearest_vs_probable": "geomlens.geometry.nearest",
    # thread 3: first-layer K/V
    "kv_losses": "geomlens.kv.api", "KVResult": "geomlens.kv.result", "KVConfig": "geomlens.kv.config",
    # thread 4: parameters in embedding space
    "project": "geomlens.projection.api", "evidence": "geomlens.projection.api",
    "stitch": "geomlens.projection.api", "align": "geomlens.projection.api",
    "ProjectionResult": "geomlens.projection.result", "EvidenceResult": "geomlens.projection.result",
    "StitchResult": "geomlens.projection.result", "AlignmentResult": "geomlens.projection.result",
    "step_attribution": "geomlens.projection.attribution",
    # registries and the run lifecycle
    "register_score": "geomlens.geometry.scores", "register_gain": "geomlens.metrics.ranking",
    "register_head": "geomlens.heads.registry", "Command": "geomlens.runner.command",
    "build_config": "geomlens.config.build",
}
_RENAMED = {"run": ("geomlens.cli", "run"), "register_command": ("geomlens.runner.command", "register")}
__all__ = ["__version__", *sorted(_EXPORTS), *sorted(_RENAMED)]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geomlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
