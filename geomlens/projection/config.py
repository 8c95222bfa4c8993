"""`ProjectConfig` and `AlignConfig`: what `run_project` and `run_align` do, checked cheaply by
`validate_project` / `validate_align` before any run dir exists.

Index specs (``layers``, ``heads``, ``neurons``): ``"all"``, or comma-separated indices and
inclusive ranges, e.g. ``"0,3,5-7"``; ranges are checked against the model once it is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from geomlens.config.base import Config, choices
from geomlens.errors import InputError

KINDS = "geomlens.projection.kinds:KINDS"
THROUGH = ("W_E", "W_U")
REDUCERS = ("mean", "best")

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


def _check_model(name: str, flag: str):
    from geomlens.models.zoo import check_model_name

    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{flag} must be a model name or a training run directory")
    return check_model_name(name)


@dataclass(kw_only=True)
class ProjectConfig(Config):
    model: str = "smollm2-135m"
    """Offline model name, TransformerLens official name, or a training run directory."""
    what: list[str] | None = field(default=None, metadata=choices(KINDS))
    """Kinds to project (mlp_in, mlp_gate, mlp_out, ov, qk, q, k, v, o); None = every kind the
    model has."""
    layers: str = "all"
    """Layers: "all" or a spec such as "0,3,5-7"."""
    heads: str | None = None
    """Heads of the per-head kinds (query heads; k/v use the KV heads they read); None = all."""
    neurons: str | None = "0-9"
    """MLP neurons (and coordinates within a head for q/k/v/o) to list; None = all of them."""
    through: str | None = field(default=None, metadata=choices(THROUGH))
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

    def validate(self) -> None:
        for name in ("layers", "heads", "neurons"):
            parse_index_spec(getattr(self, name), what=f"--{name}")
        if self.k < 1:
            raise InputError(f"--k must be >= 1, got {self.k}")
        if self.pair_tokens is not None and self.pair_tokens < 2:
            raise InputError(f"--pair-tokens must be >= 2 or none, got {self.pair_tokens}")


def known_depth(name: str, flag: str) -> int | None:
    """Check ``name`` (`_check_model`) and return its number of layers where it is known without
    loading the model: an offline model's zoo entry, a run directory's model.json; None for a
    hub name."""
    from geomlens.models.trained import read_trained_config, trained_files

    entry = _check_model(name, flag)
    if entry is not None:
        return entry.n_layers
    files = trained_files(name)
    return None if files is None else int(read_trained_config(files[0])["architecture"]["n_layers"])


def validate_project(cfg: ProjectConfig) -> None:
    """Before a run dir exists: the model name or run directory is loadable, and the layers
    exist where the model's depth is known without loading it."""
    n_layers = known_depth(cfg.model, "--model")
    if n_layers is not None:
        parse_index_spec(cfg.layers, n_layers, what="--layers")


@dataclass(kw_only=True)
class AlignConfig(Config):
    model_a: str = "smollm2-135m"
    """First model: offline name, TransformerLens official name, or a training run directory."""
    model_b: str | None = None
    """Second model (required) (same tokenizer as model_a; d_model and depth may differ)."""
    kinds: list[str] | None = field(default=None, metadata=choices(KINDS))
    """Vector kinds to align (mlp_in, mlp_gate, mlp_out, q, k, v, o); None = the MLP kinds both
    models have."""
    reduce: str = field(default="mean", metadata=choices(REDUCERS))
    """Layer score from the neuron |corr| matrix: "mean" over all pairs (the paper's) or "best"
    (mean best match, both directions)."""
    k: int = 20
    """Top-k tokens for the overlap of matched neurons."""
    n_permutations: int = 20
    """Random token permutations of model_b's vocabulary for the null."""
    n_neuron_null: int = 5
    """How many of those permutations also give the neuron-level null."""
    raw_permutations: int | None = None
    """Permutations of model_b's coordinates for the raw d_model baseline's null; None = as many as
    n_permutations."""
    seed: int = 0
    """Seeds the permutations and the random neuron pairing."""
    device: str | None = None
    """Device (None = CUDA if available, else CPU)."""

    def validate(self) -> None:
        from geomlens.projection.kinds import PAIR_KINDS

        if self.model_b is None:
            raise InputError("--model-b is required: an offline model name or a training run directory")
        pairs = [kd for kd in self.kinds or () if kd in PAIR_KINDS]
        if pairs:
            raise InputError(f"--kinds {pairs} are token-pair kinds and cannot be aligned; use vector kinds")
        if self.k < 1:
            raise InputError(f"--k must be >= 1, got {self.k}")
        if self.n_permutations < 0 or self.n_neuron_null < 0 or (self.raw_permutations or 0) < 0:
            raise InputError("--n-permutations and --n-neuron-null must be >= 0")


def validate_align(cfg: AlignConfig) -> None:
    """Before a run dir exists: both models are loadable names or run directories."""
    _check_model(cfg.model_a, "--model-a")
    _check_model(cfg.model_b, "--model-b")
