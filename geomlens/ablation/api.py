"""`ablate(model, texts | cfg)`: hook-level ablations in memory, for notebooks.

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    result = geomlens.ablate(model, ["The capital of France is Paris.", "..."], sweep=True)
    result                                   # HTML headline (clean numbers, largest Δloss)
    result.plot("delta_loss")                # a Figure
    result = geomlens.ablate(model, n_segments=2, method="mean", layers=[3])  # the bundled corpus
    result.save("runs/x")                    # the files ``geomlens ablate`` writes

The same config runs to a run directory with ``geomlens.run("ablate", cfg, "runs/x")``; both go
through `ablate_tokens`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geomlens.ablation.config import AblateConfig
from geomlens.ablation.result import AblationResult
from geomlens.ablation.sweep import ablation_table, conditions_for
from geomlens.data.request import config_and_segments
from geomlens.models import model_info
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def ablate_tokens(
    model: HookedTransformer, inputs: Any, cfg: AblateConfig, *, ranks: Ranks | None = None,
    records: str | Path | None = None,
) -> AblationResult:
    """The ablations ``cfg`` asks for (its conditions, method, k, seed, batch size) on
    ``inputs`` (a text, a list of texts or token ids), as an `AblationResult`. ``ranks``: the
    ranks of a torchrun launch, which split the batches (`geomlens.runner.sharding`).
    ``records``: keep every batch's numbers in this folder (`geomlens.runner.record_log`); a
    call given the folder of an interrupted call with the same arguments resumes from it."""
    conditions = conditions_for(cfg, model.cfg.n_layers)
    if ranks is None or ranks.is_main:
        logger.info("ablate: %d conditions (%s)", len(conditions), cfg.method)
    table, clean = ablation_table(model, inputs, conditions, method=cfg.method, k=cfg.k, seed=cfg.seed,
                                  chunk_size=cfg.chunk_size, batch_size=cfg.batch_size, ranks=ranks,
                                  records=records)
    return AblationResult(table=table, clean=clean, cfg=cfg, model_info=model_info(model))


def ablate(
    model: HookedTransformer, cfg: AblateConfig | Any = None, *, texts: Any = None, **overrides: Any
) -> AblationResult:
    """Ablate ``model``'s attention / MLP outputs on ``texts`` (or the text ``cfg`` selects).

    Args:
        model: A HookedTransformer (e.g. from `geomlens.load_model`).
        cfg: The `AblateConfig` (None = the defaults; ``cfg.model`` is not used), or the texts
            themselves in place of ``texts=``.
        texts: A text, a list of texts or token ids (`geomlens.data.inputs.as_sequences`), each
            whole unless ``max_tokens=`` is given; a .jsonl/.txt path is the config's ``texts``
            (`geomlens.data.request`).
        overrides: Field values that replace ``cfg``'s (``sweep=True``, ``method="mean"``,
            ``layers=[0, 1]``), validated like CLI flags.

    Returns:
        The `AblationResult`: ``table``, ``clean``, ``summary``, ``plot()``, ``save(run_dir)``.
    """
    cfg, seqs, _, _ = config_and_segments(model, AblateConfig, cfg, texts, where="ablate", **overrides)
    return ablate_tokens(model, seqs, cfg)
