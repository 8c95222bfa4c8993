"""`load_model(name)`: offline GGUF models, trained models of run directories, or TransformerLens
hub names."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geomlens.backend import require_tl3, resolve_backend, view_of
from geomlens.device import resolve_device
from geomlens.errors import InputError, UnknownModelError
from geomlens.models.cache import load_from_cache, save_to_cache, set_native_tokenizer
from geomlens.models.convert import CONVERTERS
from geomlens.models.gguf import load_hf_from_gguf
from geomlens.models.random_shapes import RANDOM_SHAPES, random_model
from geomlens.models.trained import check_not_legacy, is_trained, load_trained
from geomlens.models.weights import weights_tied
from geomlens.models.zoo import OFFLINE_MODELS, get_offline_model

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

PROCESSING_DEFAULTS = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False}


def _hub_model(name: str, device: torch.device, dtype, processing: dict) -> HookedTransformer:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise UnknownModelError(
            f"Unknown model {name!r}. Offline models: {', '.join(OFFLINE_MODELS)}; or a "
            "TransformerLens official model name (needs Hugging Face hub access)."
        ) from None
    try:
        return require_tl3("HookedTransformer loading").HookedTransformer.from_pretrained(
            name, device=str(device), dtype=dtype or torch.float32, **processing
        )
    except (OSError, ConnectionError) as exc:  # hub unreachable, gated or not cached
        raise UnknownModelError(
            f"{name!r} is a TransformerLens model but its weights could not be fetched from the "
            f"Hugging Face hub ({type(exc).__name__}). Offline, use one of: "
            f"{', '.join(OFFLINE_MODELS)}."
        ) from None


def _offline_model(name: str, *, use_cache: bool) -> HookedTransformer:
    """An offline zoo model: from the converted-weights cache, else converted from its GGUF."""
    spec = get_offline_model(name)
    t0 = time.perf_counter()
    model = load_from_cache(name) if use_cache else None
    from_cache = model is not None
    if model is None:
        hf_model, tokenizer = load_hf_from_gguf(spec.locate())
        model = CONVERTERS[spec.family](hf_model, tokenizer, name=name)
        set_native_tokenizer(model, tokenizer)
        del hf_model
        if use_cache:
            save_to_cache(model, name, tokenizer)
    logger.info("Loaded %s in %.1fs (%s)", name, time.perf_counter() - t0,
                "cache" if from_cache else "converted from GGUF")
    return model


def load_model(
    name: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fold_ln: bool = False,
    center_writing_weights: bool = False,
    center_unembed: bool = False,
    use_cache: bool = True,
    backend: str = "auto",
) -> Any:
    """Load a pretrained model in eval mode: a `HookedTransformer` (TransformerLens 3) or a
    ``TransformerBridge`` (TransformerLens 4); `geomlens.backend.view_of` reads either.

    Args:
        name: an offline model (``"smollm2-135m"``, ``"gemma3-270m"``), a run directory
            holding a trained model (see `geomlens.models.trained.load_trained`, which reads
            only safetensors + JSON and takes no weight processing) or a TransformerLens
            official name
            (``"meta-llama/Llama-3.2-1B"``; needs hub access), or a random-weight thesis shape
            (``"random-llama-3.1-8b"``; `geomlens.models.random_shapes`).
        device: None = CUDA if available else CPU.
        dtype: weights dtype (float32 by default).
        fold_ln: TransformerLens weight processing (off by default: processing rewrites
            W_E / W_U, and the geometry measures the raw W_E).
        center_writing_weights: TransformerLens weight processing (off by default).
        center_unembed: TransformerLens weight processing (off by default).
        use_cache: read/write the converted-weights cache (first load converts the GGUF;
            TransformerLens 3 only).
        backend: ``"auto"`` (the installed TransformerLens), ``"tl3"`` or ``"tl4"``; asking for
            one that is not installed is a one-line error naming the pip command.

    The backend and the processing actually applied are recorded in
    ``model_info(model)["backend"]`` and ``["processing"]``. ``W_E`` of the view is the same
    matrix on both backends (`geomlens.backend.view`).
    """
    check_not_legacy(name)
    if resolve_backend(backend) == "tl4":
        return _bridge_model(name, device=device, dtype=dtype,
                             processing=fold_ln or center_writing_weights or center_unembed)
    if is_trained(name):
        if fold_ln or center_writing_weights or center_unembed:
            raise InputError("Weight processing is not supported for trained models of run "
                             "directories.")
        model = load_trained(name, device=device)
        return model.to(dtype) if dtype is not None else model
    dev = resolve_device(device)
    processing = {
        "fold_ln": fold_ln, "center_writing_weights": center_writing_weights,
        "center_unembed": center_unembed,
    }
    if name in RANDOM_SHAPES:
        return random_model(name, device=dev, dtype=dtype or torch.float32)
    if name not in OFFLINE_MODELS:
        model = _hub_model(name, dev, dtype, processing)
        _annotate(model, name=name, tied=None, processing=processing, source="huggingface hub")
        return model.eval()

    return _offline_on_device(name, dev, dtype, processing, use_cache=use_cache)


def _offline_on_device(name: str, dev: torch.device, dtype: torch.dtype | None,
                       processing: dict[str, bool], *, use_cache: bool) -> Any:
    """An offline model (cached conversion), weight-processed as asked, on ``dev``."""
    spec = get_offline_model(name)
    model = _offline_model(name, use_cache=use_cache)
    if any(processing.values()):
        model.process_weights_(**processing)
    if dtype is not None:
        model = model.to(dtype)
    model = model.to(dev)
    model.cfg.device = str(dev)
    _annotate(model, name=name, tied=spec.tied_embeddings, processing=processing, source=spec.source)
    model.geomlens_info["tying_note"] = spec.tying_note
    return model.eval()


def _bridge_model(name, *, device, dtype, processing: bool) -> Any:
    """TransformerLens 4: GGUF -> transformers model -> ``TransformerBridge`` (no hub) for the
    offline models, ``boot_transformers(name)`` for hub names; raw weights only."""
    from geomlens.backend.tl4 import boot_bridge, boot_hub

    if processing:
        raise InputError("Weight processing (fold_ln, centring) is TransformerLens 3 only; "
                         "the TransformerLens 4 backend loads raw weights.")
    if is_trained(name):
        require_tl3("Loading a trained model")
    if name in RANDOM_SHAPES:
        require_tl3("A random-weight model")
    dev = str(resolve_device(device))
    if name in OFFLINE_MODELS:
        spec = get_offline_model(name)
        hf_model, tokenizer = load_hf_from_gguf(spec.locate())
        model = boot_bridge(hf_model, tokenizer, name=spec.hub_name, device=dev)
        tied, source = spec.tied_embeddings, spec.source
    else:
        model, tied, source = boot_hub(name, device=dev), None, "huggingface hub"
    if dtype is not None:
        model = model.to(dtype)
    _annotate(model, name=name, tied=tied, processing=view_of(model).processing(), source=source)
    return model.eval()


def _annotate(model, *, name, tied, processing, source) -> None:
    model.geomlens_info = {
        "name": name, "tied_embeddings": tied, "processing": dict(processing), "source": source,
        "backend": view_of(model).backend,
        "W_E": view_of(model).W_E_definition(),
        "d_vocab": model.cfg.d_vocab, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
    }


def model_info(model: HookedTransformer) -> dict:
    """Provenance of a loaded model: name, tied_embeddings, processing, source, sizes.

    For models not loaded through `load_model`, ``tied_embeddings`` is decided by comparing
    ``W_E`` with ``W_U.T``.
    """
    info = dict(getattr(model, "geomlens_info", {}))
    if info.get("tied_embeddings") is None:
        info["tied_embeddings"] = weights_tied(model)
    info.setdefault("name", model.cfg.model_name)
    info.setdefault("processing", dict(PROCESSING_DEFAULTS))
    info.setdefault("backend", view_of(model).backend)
    return info
