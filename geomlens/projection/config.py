"""`ProjectConfig` and `AlignConfig`: what `run_project` and `run_align` do, checked cheaply by
`validate_project` / `validate_align` before any run dir exists.

Index specs (``layers``, ``heads``, ``neurons``): ``"all"``, or comma-separated indices and
inclusive ranges, e.g. ``"0,3,5-7"``; ranges are checked against the model once it is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geomlens.errors import InputError
from geomlens.projection.alignment import REDUCERS
from geomlens.projection.kinds import KINDS, PAIR_KINDS, THROUGH

logger = logging.getLogger(__name__)

_SPEC = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def parse_index_spec(spec: str | None, n: int | None = None, *, what: str = "index") -> list[int] | None:
    """``"all"``/None -> None (all); ``"0,3,5-7"`` -> [0, 3, 5, 6, 7]. With ``n``, indices must be
    below it. Raises InputError on bad syntax, empty or reversed ranges."""
    if spec is None or str(spec).strip().lower() == "all":
        return None
    text = str(spec).replace(" ", "")
    if not _SPEC.match(text):
        raise InputError(f"{what} spec {spec!r}: use 'all' or indices and ranges like '0,3,5-7'")
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise InputError(f"{what} spec {spec!r}: range {part} is reversed")
        out += [i for i in range(a, b + 1) if i not in out]
    if n is not None and max(out) >= n:
        raise InputError(f"{what} {[i for i in out if i >= n]} do not exist (0..{n - 1})")
    return out


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", cls.__name__, unknown)
    return cls(**{k: v for k, v in d.items() if k in names})


def _check_model(name: str, field: str) -> None:
    from geomlens.models.run_model import is_run_dir

    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{field} must be a model name or a training run directory")
    p = Path(name)
    if p.exists() and not is_run_dir(p):
        raise InputError(f"{field}={name!r} is a path without a training checkpoint "
                         "(checkpoints/latest.pt)")


@dataclass(kw_only=True)
class ProjectConfig:
    model: str = "smollm2-135m"
    """Offline model name, TransformerLens official name, or a training run directory."""
    what: list[str] | None = None
    """Kinds to project (mlp_in, mlp_gate, mlp_out, ov, qk, q, k, v, o); None = every kind the
    model has."""
    layers: str = "all"
    """Layers: "all" or a spec such as "0,3,5-7"."""
    heads: str | None = None
    """Heads of the per-head kinds (query heads; k/v use the KV heads they read); None = all."""
    neurons: str | None = "0-9"
    """MLP neurons (and coordinates within a head for q/k/v/o) to list; None = all of them."""
    through: str | None = None
    """"W_E" or "W_U" for every kind (both sides of ov/qk); None = each kind's default (read
    kinds W_E, write kinds W_U, ov W_E -> W_U)."""
    k: int = 20
    """Tokens (token pairs for ov/qk) per direction (top and bottom)."""
    pair_tokens: int | None = 8192
    """ov/qk pairs are searched among the pair_tokens most frequent tokens of the bundled
    train_cpu text (run dirs: their own most frequent ids); None = the whole vocabulary (exact,
    ~20 s per SmolLM2 head and ~30 min per Gemma-3 head on one CPU thread)."""
    seed: int = 0
    """Recorded with the run (the projection itself draws no random numbers)."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def __post_init__(self) -> None:
        validate_project(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProjectConfig:
        """Build from plain values; unknown keys are dropped with a warning."""
        return _from_dict(cls, d)


def validate_project(cfg: ProjectConfig) -> None:
    """Cheap checks (no model load): kind names, specs, through, k, pair_tokens, model path."""
    _check_model(cfg.model, "model")
    if cfg.what is not None:
        bad = [w for w in cfg.what if w not in KINDS]
        if bad or not cfg.what:
            raise InputError(f"what: unknown kinds {bad or cfg.what}; choose from {list(KINDS)}")
    for name in ("layers", "heads", "neurons"):
        parse_index_spec(getattr(cfg, name), what=name)
    if cfg.through is not None and cfg.through not in THROUGH:
        raise InputError(f"through must be one of {THROUGH} or unset, not {cfg.through!r}")
    if cfg.k < 1:
        raise InputError(f"k must be >= 1, got {cfg.k}")
    if cfg.pair_tokens is not None and cfg.pair_tokens < 2:
        raise InputError(f"pair_tokens must be >= 2 or unset, got {cfg.pair_tokens}")


@dataclass(kw_only=True)
class AlignConfig:
    model_a: str = "smollm2-135m"
    """First model: offline name, TransformerLens official name, or a training run directory."""
    model_b: str
    """Second model (same tokenizer as model_a; d_model and depth may differ)."""
    kinds: list[str] | None = None
    """Vector kinds to align (mlp_in, mlp_gate, mlp_out, q, k, v, o); None = the MLP kinds both
    models have."""
    reduce: str = "mean"
    """Layer score from the neuron |corr| matrix: "mean" over all pairs (the paper's) or "best"
    (mean best match, both directions)."""
    k: int = 20
    """Top-k tokens for the overlap of matched neurons."""
    n_permutations: int = 20
    """Random token permutations of model_b's vocabulary for the null."""
    n_neuron_null: int = 5
    """How many of those permutations also give the neuron-level null."""
    seed: int = 0
    """Seeds the permutations and the random neuron pairing."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def __post_init__(self) -> None:
        validate_align(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignConfig:
        """Build from plain values; unknown keys are dropped with a warning."""
        return _from_dict(cls, d)


def validate_align(cfg: AlignConfig) -> None:
    """Cheap checks (no model load): model names/paths, kinds, reduce, counts."""
    _check_model(cfg.model_a, "model_a")
    _check_model(cfg.model_b, "model_b")
    if cfg.kinds is not None:
        bad = [kd for kd in cfg.kinds if kd not in KINDS or kd in PAIR_KINDS]
        if bad or not cfg.kinds:
            raise InputError(f"kinds {bad or cfg.kinds} cannot be aligned; choose vector kinds "
                             f"from {[kd for kd in KINDS if kd not in PAIR_KINDS]}")
    if cfg.reduce not in REDUCERS:
        raise InputError(f"reduce must be one of {REDUCERS}, not {cfg.reduce!r}")
    if cfg.k < 1:
        raise InputError(f"k must be >= 1, got {cfg.k}")
    if cfg.n_permutations < 0 or cfg.n_neuron_null < 0:
        raise InputError("n_permutations and n_neuron_null must be >= 0")
