"""Capture: one forward pass per batch, keeping the LM logits and the requested hidden states at
every valid position (flattened in (sequence, position) order)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Sequence

from jaxtyping import Float, Int
from torch import Tensor

from geomlens.data.batching import ValidPositions

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def hidden_hook_names(n_layers: int) -> dict[str, str]:
    """Hook point of each ``hidden`` choice (full names)."""
    return {
        "ln_final": "unembed.hook_in",
        "resid_post": f"blocks.{n_layers - 1}.hook_resid_post",
    }


@dataclass
class CapturedBatch:
    """The valid positions (``pos < length``) of one right-padded batch."""

    tokens: Int[Tensor, "batch pos"]
    """The batch as it went through the model (on the model's device)."""
    lengths: Int[Tensor, "batch"]
    """Valid length of each row."""
    positions: ValidPositions
    """Row, position and token of each valid position."""
    logits: Float[Tensor, "n_positions d_vocab"]
    """LM logits at each valid position, float32 (whatever dtype the forward ran in)."""
    hidden: dict[str, Float[Tensor, "n_positions d_model"]]
    """Hidden states by ``hidden`` choice (see `hidden_hook_names`), float32."""

    @property
    def n_positions(self) -> int:
        return len(self.positions.pos)


def capture_batch(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, "batch"],
    hidden: Sequence[str],
    extra_hooks: Sequence[tuple[str, Callable]] = (),
) -> CapturedBatch:
    """Run ``model`` on ``tokens`` once and keep logits and hidden states at the valid positions
    (``extra_hooks``: more ``(hook name, fn)`` pairs for the same pass, e.g. the layer lens's)."""
    hooks = hidden_hook_names(model.cfg.n_layers)
    store: dict[str, Tensor] = {}

    def save(tensor: Tensor, *, hook, name: str) -> Tensor:
        # keyed by the name asked for: TransformerLens 4 passes the canonical hook
        # (blocks.l.hook_out) for an alias (blocks.l.hook_resid_post)
        store[name] = tensor.detach()
        return tensor

    logits = model.run_with_hooks(tokens, fwd_hooks=[(hooks[name], partial(save, name=hooks[name]))
                                                     for name in hidden] + list(extra_hooks))
    positions = ValidPositions.of(tokens, lengths.to(tokens.device))
    rows = positions.batch_idx * tokens.shape[1] + positions.pos
    return CapturedBatch(
        tokens=tokens, lengths=lengths, positions=positions,
        logits=_valid_rows(logits, rows).float(),  # bf16 forward: p and its ranks in float32
        hidden={name: _valid_rows(store[hooks[name]], rows).float() for name in hidden},
    )


def _valid_rows(
    x: Float[Tensor, "batch pos d"], rows: Int[Tensor, "n_positions"]
) -> Float[Tensor, "n_positions d"]:
    """``x`` flattened to (batch·pos) rows, at ``rows``: a view, without copying the
    vocabulary-sized logits, when every position is valid."""
    flat = x.reshape(-1, x.shape[-1])
    if len(rows) == flat.shape[0]:  # rows is sorted and unique: it is every row
        return flat
    return flat.index_select(0, rows)
