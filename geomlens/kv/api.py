"""`kv_losses(model, texts | cfg)`: clean vs first-layer-K/V loss in memory, for notebooks.

    import geomlens
    model = geomlens.load_model("smollm2-135m")
    result = geomlens.kv_losses(model, ["The capital of France is Paris.", "..."], sweep=True)
    result                                   # HTML headline (clean / patched / Δ loss, CIs)
    result.plot("ge_m_curve")                # a Figure
    result = geomlens.kv_losses(model, n_segments=2, layers=">=15", mode="prev")  # bundled corpus
    result.save("runs/x")                    # the files ``geomlens kv`` writes

The same config runs to a run directory with ``geomlens.run("kv", cfg, "runs/x")``; both go
through `measure_kv`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from torch import Tensor

from geomlens.data.inputs import as_sequences
from geomlens.data.request import TEXT_DOMAIN, config_and_segments
from geomlens.errors import InputError
from geomlens.kv.cache import expected_cache_bytes
from geomlens.kv.config import KVConfig
from geomlens.kv.evaluate import loss_rows, segment_losses
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import check_patchable, key_recipe
from geomlens.kv.result import KVResult
from geomlens.models import model_info
from geomlens.runner.sharding import Ranks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

#: the sweep columns kept per condition
SWEEP_COLUMNS = ("patched_loss", "patched_loss_low", "patched_loss_high",
                 "delta_loss", "delta_loss_low", "delta_loss_high")


def _pass(records: str | Path | None, name: str) -> Path | None:
    """The folder of one pass's batch records (None: none kept)."""
    return None if records is None else Path(records) / name


def _condition(model, seqs, counts, clean, layer_map: LayerMap, cfg: KVConfig, ranks: Ranks | None,
               records: Path | None, **labels) -> dict[str, Any]:
    sums, _ = segment_losses(model, seqs, layer_map=layer_map, mode=cfg.mode, batch_size=cfg.batch_size,
                             ranks=ranks, records=records)
    row = loss_rows(clean, sums, counts, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed).iloc[0]
    if ranks is None or ranks.is_main:
        logger.info("kv sweep %s: loss %.4f (delta %+.4f)", labels, row["patched_loss"], row["delta_loss"])
    return {**labels, "layer_types": layer_map.layer_types, **{k: float(row[k]) for k in SWEEP_COLUMNS}}


def sweep_tables(
    model: HookedTransformer, seqs: Sequence[Tensor], counts: np.ndarray, clean: np.ndarray, cfg: KVConfig,
    ranks: Ranks | None = None, records: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-layer sensitivity: only layer l takes layer 0's K/V, l = 1..L−1; the ≥m curve:
    layers ≥ m take it, m = 1..L−1), each condition's loss and Δ with 95% CIs. ``records``:
    each pass keeps its batch records in a folder of its own in there (`measure_kv`)."""
    n = model.cfg.n_layers
    per_layer = pd.DataFrame([
        _condition(model, seqs, counts, clean, LayerMap.only(layer, n), cfg, ranks,
                   _pass(records, f"layer-{layer}"), layer=layer) for layer in range(1, n)])
    ge_m = pd.DataFrame([
        _condition(model, seqs, counts, clean, LayerMap.parse(f">={m}", n), cfg, ranks,
                   _pass(records, f"ge-{m}"), m=m, n_shared=n - m)
        for m in range(1, n)])
    return per_layer, ge_m


def _cache_sizes(model: HookedTransformer, layer_map: LayerMap) -> dict[str, Any]:
    full = expected_cache_bytes(model.cfg, LayerMap.none(model.cfg.n_layers), 1)
    shared = expected_cache_bytes(model.cfg, layer_map, 1)
    return {"cache_bytes_per_token_standard": full, "cache_bytes_per_token_patched": shared,
            "cache_reduction": full / shared}


def measure_kv(
    model: HookedTransformer, inputs: Any, cfg: KVConfig, *,
    segment_ids: Sequence[str] | None = None, domains: Sequence[str] | None = None,
    ranks: Ranks | None = None, records: str | Path | None = None,
) -> KVResult:
    """Clean vs first-layer-K/V loss of ``model`` on ``inputs`` (a text, a list of texts or
    token ids; one segment each) for ``cfg``'s layer map and mode, with the sweeps when
    ``cfg.sweep``. ``segment_ids``/``domains`` label the segments (default "0", "1"... in the
    domain "text"). ``ranks``: the ranks of a torchrun launch, which split the batches of every
    pass (`geomlens.runner.sharding`); every rank gets the whole result. ``records``: a folder
    in which every pass (clean, patched, each sweep condition) keeps its batch records
    (`geomlens.runner.record_log`); a call given the folder of an interrupted call with the same
    arguments reads those back instead of computing them."""
    t0 = time.perf_counter()
    layer_map = LayerMap.for_model(cfg.layers, model)
    check_patchable(model, layer_map, cfg.mode)
    seqs = as_sequences(model, inputs, where="kv")
    if min(len(s) for s in seqs) < 2:
        raise InputError("kv: every segment needs at least 2 tokens (one next-token prediction).")
    ids = list(segment_ids) if segment_ids is not None else [str(i) for i in range(len(seqs))]
    domains = list(domains) if domains is not None else [TEXT_DOMAIN] * len(seqs)
    if ranks is None or ranks.is_main:
        logger.info("kv: %d segments, %d tokens, map %s", len(seqs), sum(len(s) for s in seqs),
                    layer_map.layer_types)
    clean, counts = segment_losses(model, seqs, batch_size=cfg.batch_size, ranks=ranks,
                                   records=_pass(records, "clean"))
    patched, _ = segment_losses(model, seqs, layer_map=layer_map, mode=cfg.mode, batch_size=cfg.batch_size,
                                ranks=ranks, records=_pass(records, "patched"))
    per_segment = pd.DataFrame({"segment_id": ids, "domain": domains, "n_predicted": counts,
                                "clean_ce_sum": clean, "patched_ce_sum": patched})
    losses = loss_rows(clean, patched, counts, domains, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    sweeps = (sweep_tables(model, seqs, counts, clean, cfg, ranks, records) if cfg.sweep
              else (None, None))
    return KVResult(per_segment=per_segment, losses=losses, cfg=cfg, layer_types=layer_map.layer_types,
                    key_recipe=key_recipe(model), n_layers=model.cfg.n_layers,
                    cache_sizes=_cache_sizes(model, layer_map), model_info=model_info(model),
                    wall_time_s=time.perf_counter() - t0, sweep_layer=sweeps[0], sweep_ge_m=sweeps[1])


def kv_losses(
    model: HookedTransformer, cfg: KVConfig | Any = None, *, texts: Any = None, **overrides: Any
) -> KVResult:
    """Clean vs first-layer-K/V loss of ``model`` on ``texts`` (or the text ``cfg`` selects).

    Args:
        model: A HookedTransformer (e.g. from `geomlens.load_model`).
        cfg: The `KVConfig` (None = the defaults; ``cfg.model`` is not used), or the texts
            themselves in place of ``texts=``.
        texts: A text, a list of texts or token ids (`geomlens.data.inputs.as_sequences`), each
            whole unless ``max_tokens=`` is given; a .jsonl/.txt path is the config's ``texts``
            (`geomlens.data.request`).
        overrides: Field values that replace ``cfg``'s (``layers=">=15"``, ``mode="prev"``,
            ``sweep=True``), validated like CLI flags.

    Returns:
        The `KVResult`: ``losses``, ``per_segment``, the sweep tables, ``summary``, ``plot()``,
        ``save(run_dir)``.
    """
    cfg, seqs, ids, domains = config_and_segments(model, KVConfig, cfg, texts, where="kv_losses", **overrides)
    return measure_kv(model, seqs, cfg, segment_ids=ids, domains=domains)
