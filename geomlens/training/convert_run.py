"""Convert a run directory of an earlier geomlens (pickled checkpoints) to the current format.

    geomlens convert-run RUN_DIR [--trust-pickle]        (`geomlens.training.command`)

Writes ``model.safetensors`` + ``model.json`` (`geomlens.models.trained`) from
``checkpoints/latest.pt``, each other checkpoint's model as ``step-XXXXXX.safetensors``, and
rewrites every ``checkpoints/*.pt`` in the format that
``torch.load(weights_only=True)`` reads (`geomlens.training.checkpoint`), so the run loads as a
model and resumes. The kept token ids of a reduced vocabulary come from the run's ``vocab.pt``, or,
for runs interrupted before writing it, from the trainer's own reduction of the run's corpus split.

The old files are read with torch's restricted unpickler, allowing only numpy's array and
scalar reconstructors besides tensors and plain values (the numpy RNG state the old format
held): no code in the file runs. A file that needs anything more is refused; ``--trust-pickle``
unpickles it fully, which runs whatever it contains: only for files from someone you trust.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geomlens.backend import require_tl3
from geomlens.errors import InputError, UnsafeFileError
from geomlens.heads import install_head
from geomlens.models.cache import config_from_json, config_to_json
from geomlens.models.tokens import load_token_stream
from geomlens.models.trained import TRAINED_TOKENIZER, save_trained, save_weights
from geomlens.training import checkpoint as ckpt
from geomlens.training.data import TokenData

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformerConfig

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

#: what the old format's numpy RNG state needs besides tensors and plain values (data only)
NUMPY_DATA = (np.ndarray, np.dtype, _reconstruct, scalar,
              *(type(np.dtype(t)) for t in ("uint32", "int64", "int32", "float64", "float32")))


#: what a checkpoint holds (`geomlens.training.checkpoint`); the "format" key is added on save
STATE_KEYS = ("config", "model_config", "model", "optimizer", "scheduler", "step", "tokens_seen",
              "train_time", "rng", "data_generators", "metrics", "loss_window")


def read_old(path: Path, *, trust_pickle: bool) -> Any:
    """An old-format file: restricted unpickling (tensors, plain values, numpy arrays), or a
    full unpickle when ``trust_pickle``."""
    try:
        with torch.serialization.safe_globals(list(NUMPY_DATA)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any refusal: the reason goes into the message)
        if not trust_pickle:
            raise UnsafeFileError(
                f"{path} holds more than tensors, plain values and numpy arrays "
                f"({ckpt.unsafe_reason(exc)}); nothing in it was run. Only if you trust who wrote "
                f"it, rerun with --trust-pickle.") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """An old checkpoint dict in the current format (numpy RNG state as tensors, the model
    config as JSON values, one data-generator state per rank; keys the trainer does not read
    are dropped)."""
    out = {k: v for k, v in state.items() if k in STATE_KEYS}
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    out["rng"] = {**state["rng"], "numpy": {
        "kind": str(kind), "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
        "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    out["model_config"] = config_to_json(_model_config(state["model_config"]))
    out["data_generators"] = state.get("data_generators") or [state["data_generator"]]
    return out


def _model_config(values: dict[str, Any]) -> HookedTransformerConfig:
    values = {k: v for k, v in values.items() if k not in ("n_params", "d_vocab_out")}
    return require_tl3("Converting a run").HookedTransformerConfig(**{**values, "device": "cpu", "init_weights": False})


def _kept(run_dir: Path, train_cfg: dict[str, Any], *, trust_pickle: bool) -> torch.Tensor | None:
    """The reduced vocabulary's kept ids: vocab.pt, else the trainer's reduction (re-tokenizes)."""
    if train_cfg.get("vocab_size") is None:
        return None
    if (run_dir / "vocab.pt").is_file():
        return read_old(run_dir / "vocab.pt", trust_pickle=trust_pickle)["kept"]
    stream = load_token_stream(train_cfg["split"], tokenizer_name=TRAINED_TOKENIZER)
    data = TokenData.from_stream(stream, val_fraction=train_cfg["val_fraction"])
    return data.reduce_vocab(train_cfg["vocab_size"]).kept


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, **state}, tmp)
    try:
        ckpt.load_checkpoint(tmp)  # the converted file reads back with weights_only=True
    except UnsafeFileError:
        tmp.unlink()
        raise
    tmp.replace(path)


def convert_run(run_dir: str | Path, *, trust_pickle: bool = False) -> Path:
    """Convert ``run_dir`` in place (see the module docstring); returns model.safetensors."""
    run_dir = Path(run_dir)
    latest = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LATEST
    if not latest.is_file():
        raise InputError(f"{run_dir} holds no {ckpt.CHECKPOINT_DIR}/{ckpt.LATEST} to convert.")
    paths = sorted((run_dir / ckpt.CHECKPOINT_DIR).glob("*.pt"))
    states = {p: read_old(p, trust_pickle=trust_pickle) for p in paths}
    upgraded = {p: s if s.get("format") == ckpt.CHECKPOINT_FORMAT else upgrade_state(s)
                for p, s in states.items()}
    state = upgraded[latest]
    train_cfg = state["config"]
    model = require_tl3("Converting a run").HookedTransformer(config_from_json(state["model_config"]), move_to_device=False)
    install_head(model, train_cfg["head"], **train_cfg.get("head_kwargs", {}))
    kept = _kept(run_dir, train_cfg, trust_pickle=trust_pickle)
    for path, new in upgraded.items():
        if new is not states[path]:
            _save_checkpoint(path, new)
        if path != latest:  # each step's model as data, for --model RUN/checkpoints/step-N.pt
            model.load_state_dict(new["model"], strict=True)
            save_weights(path.with_suffix(".safetensors"), model, step=new["step"])
    model.load_state_dict(state["model"], strict=True)
    return save_trained(
        run_dir, model, head=train_cfg["head"], head_kwargs=train_cfg.get("head_kwargs", {}),
        kept=kept, oov_id=None if kept is None else model.cfg.d_vocab - 1,
        provenance={"step": state["step"], "seed": train_cfg.get("seed"),
                    "kv_layers": train_cfg.get("kv_layers"), "train_config": train_cfg})
