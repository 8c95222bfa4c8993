"""A trained model in a run directory, stored as data: ``model.safetensors`` + ``model.json``.

`save_trained` writes them (the trainer calls it at every checkpoint); `load_trained` reads
only them: no pickle is opened, no training code is imported, no corpus is re-read, so a
run directory from someone else is safe to load.

    model.safetensors   the state dict, LM head included (tensors shared by a tied head, once)
    checkpoints/step-XXXXXX.safetensors   the same at each checkpoint (the model along training;
                        ``--model RUN/checkpoints/step-XXXXXX.pt`` reads this file, never the .pt)
    model.json          {"format": FORMAT,
                         "architecture": the HookedTransformerConfig fields (`config_to_json`),
                         "head": {"name": ..., "kwargs": {...}}  (`geomlens.heads.install_head`),
                         "vocabulary": {"kept": [tokenizer id of model id 0, 1, ...] | null,
                                        "oov_id": int | null},
                         "tokenizer": {"name": an offline model whose tokenizer made the ids},
                         "step", "seed", "kv_layers", "train_config": provenance}

The model is rebuilt from ``architecture``, the head is installed and the weights are loaded
strictly. ``W_U`` exists only for heads that own one (``linear``); the others score against
``W_E``. A model trained with ``vocab_size`` renumbered the tokenizer's ids (model id ``i`` is
tokenizer id ``kept[i]``, ``oov_id`` stands for every other token); it gets that table as a
`TokenMap` and no ``model.tokenizer``, because the tokenizer's ids are not the model's.

A run directory written before this format holds only ``checkpoints/latest.pt`` (a pickle); it is
refused with the command that converts it (`CONVERT_COMMAND`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from geomlens.backend import require_tl3
from geomlens.data.token_map import ATTRIBUTE, TokenMap
from geomlens.device import resolve_device
from geomlens.errors import InputError, LegacyRunError
from geomlens.heads import install_head
from geomlens.models.cache import config_from_json, config_to_json, set_native_tokenizer
from geomlens.models.tokenizer import load_tokenizer

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

FORMAT = "geomlens-trained-model/1"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
LATEST_NAME = "latest.pt"
#: where run directories of earlier geomlens versions kept their (pickled) model
LEGACY_CHECKPOINT = Path(CHECKPOINT_DIR) / LATEST_NAME
#: converts such a directory (`geomlens.training.convert_run`: the thread that wrote those pickles)
CONVERT_COMMAND = "geomlens convert-run"
#: the tokenizer of every model `geomlens train` trains (`geomlens.models.tokens`)
TRAINED_TOKENIZER = "smollm2-135m"


def _has_model(run_dir: Path) -> bool:
    return (run_dir / CONFIG_FILE).is_file() and (run_dir / MODEL_FILE).is_file()


def trained_files(path: str | Path) -> tuple[Path, Path] | None:
    """(run directory, weights file) of the trained model ``path`` names, or None.

    ``path`` is a run directory (its model.safetensors), its model.json / model.safetensors, or
    a checkpoint ``checkpoints/step-XXXXXX.pt`` / ``.safetensors`` (that step's safetensors;
    ``latest.pt`` = model.safetensors). A ``.pt`` file itself is never read."""
    p = Path(path)
    if p.is_dir():
        return (p, p / MODEL_FILE) if _has_model(p) else None
    if p.name in (MODEL_FILE, CONFIG_FILE) and _has_model(p.parent):
        return p.parent, p.parent / MODEL_FILE
    run_dir = p.parent.parent
    if p.parent.name != CHECKPOINT_DIR or p.suffix not in (".pt", ".safetensors") or not _has_model(run_dir):
        return None
    weights = run_dir / MODEL_FILE if p.name == LATEST_NAME else p.with_suffix(".safetensors")
    return (run_dir, weights) if weights.is_file() else None


def is_trained(path: str | Path) -> bool:
    """True if ``path`` names a trained model (see `trained_files`)."""
    return trained_files(path) is not None


def legacy_run_dir(path: str | Path) -> Path | None:
    """The run directory of an earlier format that ``path`` names (the directory or a ``.pt``
    checkpoint in it), or None."""
    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        p = p.parent.parent if p.parent.name == CHECKPOINT_DIR else p.parent
    if p.is_dir() and (p / LEGACY_CHECKPOINT).is_file() and not _has_model(p):
        return p
    return None


def check_not_legacy(path: str | Path) -> None:
    """Raise `LegacyRunError`, naming the conversion command, if ``path`` is an old run dir."""
    old = legacy_run_dir(path)
    if old is not None:
        raise LegacyRunError(
            f"{old} holds a model in the old pickled format (checkpoints/latest.pt, no "
            f"{MODEL_FILE}); convert it once with: {CONVERT_COMMAND} {old}")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    tmp.replace(path)


def save_weights(path: str | Path, model: HookedTransformer, *, step: int | None = None) -> Path:
    """The model's state dict as safetensors at ``path`` (atomically; ``step`` in the metadata)."""
    from safetensors.torch import save_model

    path = Path(path)
    metadata = {"format": FORMAT, **({"step": str(step)} if step is not None else {})}
    _atomic_write(path, lambda tmp: save_model(model, str(tmp), metadata=metadata))
    return path


def save_trained(
    run_dir: str | Path,
    model: HookedTransformer,
    *,
    head: str,
    head_kwargs: dict[str, Any] | None = None,
    kept: Int[Tensor, "n_kept"] | None = None,
    oov_id: int | None = None,
    tokenizer: str = TRAINED_TOKENIZER,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``run_dir`` (each atomically).

    Args:
        head: the head installed on ``model``.
        head_kwargs: its arguments (`geomlens.heads.install_head`).
        kept: the tokenizer id of each model id of a reduced vocabulary (None = not reduced).
        oov_id: the model id that stands for every token outside ``kept``.
        tokenizer: the offline model whose tokenizer made the token ids.
        provenance: JSON values recorded as they are (step, seed, kv_layers, train_config).
    """
    run_dir = Path(run_dir)
    config = {
        "format": FORMAT,
        "architecture": config_to_json(model.cfg),
        "head": {"name": head, "kwargs": dict(head_kwargs or {})},
        "vocabulary": {"kept": None if kept is None else [int(i) for i in kept.tolist()],
                       "oov_id": oov_id},
        "tokenizer": {"name": tokenizer},
        **(provenance or {}),
    }
    text = json.dumps(config, indent=1, default=str)
    save_weights(run_dir / MODEL_FILE, model, step=(provenance or {}).get("step"))
    _atomic_write(run_dir / CONFIG_FILE, lambda tmp: tmp.write_text(text))
    return run_dir / MODEL_FILE


def read_trained_config(run_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of a run directory, checked (a one-line `InputError` if it is not one)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}).") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{path} is not a geomlens trained-model config (format {FORMAT!r}).")
    missing = [k for k in ("architecture", "head", "vocabulary", "tokenizer") if k not in config]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}.")
    return config


def check_trained(path: str | Path) -> None:
    """Read what can be read of a trained model without building it (model.json and the
    weights' header), so that a corrupt, empty or foreign file fails before a run directory
    exists; a one-line `InputError` names the file."""
    from safetensors import SafetensorError, safe_open

    files = trained_files(path)
    if files is None:
        raise InputError(f"{path} holds no trained model ({CONFIG_FILE} + {MODEL_FILE}).")
    run_dir, weights = files
    read_trained_config(run_dir)
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{weights} is not a readable safetensors file ({first}).") from None


def _build(config: dict[str, Any], run_dir: Path, weights: Path) -> tuple[HookedTransformer, int | None]:
    """The architecture with its head, weights loaded strictly from ``weights``; and the step
    its metadata names."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    try:
        model = require_tl3("Loading a trained model").HookedTransformer(config_from_json(config["architecture"]), move_to_device=False)
        install_head(model, config["head"]["name"], **config["head"].get("kwargs", {}))
    except InputError:
        raise
    except (TypeError, ValueError, AssertionError, AttributeError, RuntimeError) as exc:
        raise InputError(f"{run_dir / CONFIG_FILE}: bad architecture or head ({exc}).") from None
    try:
        load_model(model, str(weights), strict=True)
        with safe_open(str(weights), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{weights} does not hold this model's weights ({first}).") from None
    return model, int(step) if step is not None else config.get("step")


def _token_map(config: dict[str, Any], model: HookedTransformer, tokenizer: Any | None) -> TokenMap:
    name = config["tokenizer"]["name"]
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(name)
        except Exception as exc:  # noqa: BLE001  (no weights package / cache: ids still work)
            logger.warning("No %s tokenizer for the model (%s); tokens print as ids.", name, exc)
    vocab = config["vocabulary"]
    if vocab.get("kept") is not None:
        kept = torch.tensor(vocab["kept"], dtype=torch.long)
        oov = vocab.get("oov_id")
        if kept.dim() != 1 or len(kept) >= model.cfg.d_vocab or (len(kept) and int(kept.min()) < 0) \
                or not (oov is None or isinstance(oov, int) and len(kept) <= oov < model.cfg.d_vocab):
            raise InputError(f"model.json: vocabulary.kept must list at most d_vocab − 1 = "
                             f"{model.cfg.d_vocab - 1} token ids (>= 0), and oov_id lie after them.")
        return TokenMap(tokenizer=tokenizer, d_vocab=model.cfg.d_vocab, kept=kept, oov_id=vocab["oov_id"])
    if tokenizer is not None:
        set_native_tokenizer(model, tokenizer)
    return TokenMap(tokenizer=tokenizer, d_vocab=model.cfg.d_vocab)


@torch.no_grad()
def load_trained(
    path: str | Path, *, device: str | torch.device | None = None, tokenizer: Any | None = None
) -> HookedTransformer:
    """The trained model of a run directory, in eval mode (reads model.json + model.safetensors).

    Args:
        path: the run directory, its model.json / model.safetensors, or one of its checkpoints
            (``checkpoints/step-XXXXXX.pt``: that step's ``.safetensors`` is read; see
            `trained_files`).
        device: None = CUDA if available, else CPU.
        tokenizer: overrides the tokenizer the config names (None = load it; tests pass theirs).
    """
    check_not_legacy(path)
    found = trained_files(path)
    if found is None:
        raise InputError(f"{path} holds no trained model ({CONFIG_FILE} + {MODEL_FILE}).")
    run_dir, weights = found
    dev = resolve_device(device)
    config = read_trained_config(run_dir)
    model, step = _build(config, run_dir, weights)
    setattr(model, ATTRIBUTE, _token_map(config, model, tokenizer))
    model = model.to(dev)
    model.cfg.device = str(dev)
    head = config["head"]["name"]
    if config.get("kv_layers") is not None:
        logger.warning("%s was trained with kv_layers=%s; the loaded model has the standard K/V "
                       "(apply geomlens.kv.share_kv(model, %r) to run it as trained).",
                       run_dir, config["kv_layers"], config["kv_layers"])
    model.geomlens_info = {
        "name": str(path), "source": f"trained model {weights}", "step": step, "head": head, "seed": config.get("seed"),
        "vocab_size": model.cfg.d_vocab if config["vocabulary"].get("kept") is not None else None,
        "tokenizer": config["tokenizer"]["name"], "kv_layers": config.get("kv_layers"),
        "tied_embeddings": head == "tied",
        "processing": {"fold_ln": False, "center_writing_weights": False, "center_unembed": False},
        "d_vocab": model.cfg.d_vocab, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
    }
    return model.eval()
