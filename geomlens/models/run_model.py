"""A training run directory as a HookedTransformer: `load_run_model(path)`.

A run dir written by `geomlens.training` holds ``checkpoints/latest.pt`` with ``config`` (the
TrainConfig), ``model_config`` (the HookedTransformerConfig) and ``model`` (the state dict, LM
head included). The model is rebuilt from ``model_config``, the run's head (`geomlens.heads`) is
installed, and the weights are loaded strictly. ``W_U`` exists only for heads that own one
(``linear``); the others score against ``W_E``.

Tokens. Runs use the SmolLM2 tokenizer. A run trained with ``vocab_size`` kept the
``vocab_size − 1`` most frequent training tokens; that table is rebuilt exactly as the trainer
built it (`TokenData.from_stream(...).reduce_vocab(...)` on the run's split) and attached as a
`TokenMap` (`geomlens.models.token_map`). ``model.tokenizer`` is then left unset, because the
tokenizer's ids are not the model's ids; runs on the full vocabulary get the tokenizer itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from geomlens.errors import InputError
from geomlens.models.token_map import ATTRIBUTE, TokenMap

logger = logging.getLogger(__name__)

#: the tokenizer every training run uses (`geomlens.training.data.load_token_stream`)
RUN_TOKENIZER = "smollm2-135m"


def checkpoint_path(path: str | Path) -> Path | None:
    """The checkpoint a run dir (or a checkpoint file) names, or None if it names none."""
    from geomlens.training.checkpoint import latest_checkpoint

    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        return p
    return latest_checkpoint(p) if p.is_dir() else None


def is_run_dir(name: str | Path) -> bool:
    """True if ``name`` is a directory holding a training checkpoint (or a checkpoint file)."""
    return checkpoint_path(name) is not None


def _config(model_config: dict[str, Any], device: str) -> HookedTransformerConfig:
    cfg = dict(model_config)
    for derived in ("n_params", "d_vocab_out"):  # recomputed by __post_init__
        cfg.pop(derived, None)
    cfg.update(device=device, init_weights=False)
    return HookedTransformerConfig(**cfg)


def reduced_vocab(train_cfg: dict[str, Any], stream: Int[Tensor, "n"] | None = None) -> Tensor:
    """The ``kept`` ids of a run trained with ``vocab_size`` (the trainer's own reduction)."""
    from geomlens.training.data import TokenData, load_token_stream

    if stream is None:
        stream = load_token_stream(train_cfg["split"], tokenizer_name=RUN_TOKENIZER)
    data = TokenData.from_stream(stream, val_fraction=train_cfg["val_fraction"])
    return data.reduce_vocab(train_cfg["vocab_size"]).kept


def _tokenizer():
    from geomlens.models.load import load_tokenizer

    try:
        return load_tokenizer(RUN_TOKENIZER)
    except Exception as exc:  # noqa: BLE001  (no weights package / cache: ids still work)
        logger.warning("No %s tokenizer for the run (%s); tokens print as ids.", RUN_TOKENIZER, exc)
        return None


@torch.no_grad()
def load_run_model(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    stream: Int[Tensor, "n_tokens"] | None = None,
    tokenizer: Any | None = None,
) -> HookedTransformer:
    """Load the latest checkpoint of a training run dir (or a checkpoint file) in eval mode.

    Args:
        path: the run dir (``checkpoints/latest.pt`` is read) or a ``.pt`` checkpoint.
        device: None = CUDA if available, else CPU.
        stream: the token stream the run was trained on, to rebuild a reduced vocabulary
            (None = the run's bundled split, tokenized as the trainer did; tests pass theirs).
        tokenizer: overrides the SmolLM2 tokenizer (None = load it; tests pass their own).
    """
    from geomlens.device import resolve_device
    from geomlens.heads import install_head
    from geomlens.training.checkpoint import load_checkpoint

    ckpt = checkpoint_path(path)
    if ckpt is None:
        raise InputError(f"{path} holds no training checkpoint (checkpoints/latest.pt).")
    dev = resolve_device(device)
    state = load_checkpoint(ckpt, map_location="cpu")
    train_cfg = state["config"]
    model = HookedTransformer(_config(state["model_config"], "cpu"), move_to_device=False)
    install_head(model, train_cfg["head"], **train_cfg.get("head_kwargs", {}))
    model.load_state_dict(state["model"], strict=True)
    tok = tokenizer if tokenizer is not None else _tokenizer()
    if train_cfg.get("vocab_size") is not None:
        kept = reduced_vocab(train_cfg, stream)
        tm = TokenMap(tokenizer=tok, d_vocab=model.cfg.d_vocab, kept=kept,
                      oov_id=train_cfg["vocab_size"] - 1)
    else:
        tm = TokenMap(tokenizer=tok, d_vocab=model.cfg.d_vocab)
        if tok is not None:
            from geomlens.models.cache import set_native_tokenizer

            set_native_tokenizer(model, tok)
    setattr(model, ATTRIBUTE, tm)
    model = model.to(dev)
    model.cfg.device = str(dev)
    model.geomlens_info = {
        "name": str(path), "source": f"training run {ckpt}", "step": state.get("step"),
        "head": train_cfg["head"], "seed": train_cfg.get("seed"),
        "vocab_size": train_cfg.get("vocab_size"), "tied_embeddings": train_cfg["head"] == "tied",
        "processing": {"fold_ln": False, "center_writing_weights": False, "center_unembed": False},
        "d_vocab": model.cfg.d_vocab, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
    }
    return model.eval()
