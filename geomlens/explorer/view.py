"""`Explorer`: the computed view of one or more sequences, independent of any front end.

It computes the grids (`geomlens.explorer.compute`), the trajectories (`paths`) and the movers of
each sequence's last position (`movement`), encodes them for the view (`payload`), answers the
view's messages (`handle`), and exports the long table (`frame`), standalone HTML
(`geomlens.explorer.export`) and a PNG. The widget (`geomlens.explorer.widget`) is a thin
anywidget front end over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from geomlens.analysis.layers import LENSES
from geomlens.backend import view_of
from geomlens.data.inputs import as_sequences as text_sequences
from geomlens.data.token_map import token_map
from geomlens.errors import InputError
from geomlens.explorer import movement, paths, payload
from geomlens.explorer.compute import (
    MEASURES,
    Grid,
    capture_names,
    compute_grid,
    grid_from_run,
    run_model,
)
from geomlens.explorer.interventions import Intervention
from geomlens.projection.attribution import attribution_hooks

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

DEFAULT_LENSES = ("logit", "distance_raw", "distance_ln_final", "distance_ln_final_gain")


def as_sequences(model: HookedTransformer, inputs: Any) -> list[torch.Tensor]:
    """text | list of texts | token ids -> 1-D token tensors (`geomlens.data.inputs.as_sequences`);
    empty or over-long input is a one-line `InputError` (nothing is cut)."""
    return text_sequences(model, inputs, where="explore")


class Explorer:
    """The view's data and its Python side (module doc)."""

    def __init__(self, model: HookedTransformer, inputs: Any, *, lenses: Sequence[str] = DEFAULT_LENSES,
                 sublayers: bool = False, movers_top: int = 5, n_near: int = 2) -> None:
        for lens in lenses:
            LENSES.get(lens)
        self.model, self.lenses, self.sublayers = model, tuple(lenses), sublayers
        self.movers_top, self.n_near = movers_top, n_near
        self.sequences = as_sequences(model, inputs)
        self.labels = token_map(model).labels
        n_layers = model.cfg.n_layers
        names = capture_names(n_layers, sublayers) | set(attribution_hooks(n_layers))
        self.grids, self.movers = [], []
        for t in self.sequences:  # one forward pass per sequence serves the grid and the movers
            logits, cache = run_model(model, t, names)
            self.grids.append(grid_from_run(model, t, logits, cache, lenses=self.lenses,
                                            sublayers=sublayers))
            self.movers.append(movement.movers(model, t, pos=len(t) - 1, layers=list(range(n_layers)),
                                               top=movers_top, run=(logits, cache)))
            del cache
        W_E = view_of(model).W_E.detach().float().cpu()
        self.paths = [paths.sequence_paths(g.resid, W_E, n_near=n_near, known=_known_near(g, n_near))
                      for g in self.grids]
        self.changed: list[Grid] | None = None
        self.changed_label = ""

    # -------------------------------------------------------------- payload

    def _extra(self, vocab_of) -> dict[str, Any]:
        seqs = []
        for ps, mv, t in zip(self.paths, self.movers, self.sequences):
            seqs.append({
                "paths": [{"points": np.round(p.points, 3).tolist(),
                           "near": vocab_of(p.near_ids).tolist(),
                           "near_points": np.round(p.near_points, 3).tolist(),
                           "explained": round(p.explained, 4)} for p in ps],
                "movers": {f"{len(t) - 1}:{layer}": v for layer, v in mv.items()},
            })
        return {"model": self.model.cfg.model_name, "vocab_size": self.model.cfg.d_vocab,
                "n_layers": self.model.cfg.n_layers,
                "measures": list(MEASURES), "extra": seqs}

    def payload(self) -> bytes:
        """The gzip bytes the view reads (`geomlens.explorer.payload`)."""
        near = [p.near_ids for ps in self.paths for p in ps]
        vocab = payload._local_vocab(self.grids, near)
        return payload.encode(self.grids, self.labels, more_ids=near,
                              extra=self._extra(lambda ids: np.searchsorted(vocab, ids)))[0]

    def changed_payload(self) -> bytes:
        if self.changed is None:
            return b""
        return payload.encode(self.changed, self.labels, extra={"label": self.changed_label,
                                                            "vocab_size": self.model.cfg.d_vocab})[0]

    # -------------------------------------------------------------- messages

    def intervene(self, target: str, layer: int, method: str = "zero",
                  lenses: Sequence[str] | None = None) -> list[Grid]:
        """Recompute every sequence with an intervention (`Intervention`) for ``lenses``
        (default: all of the view's)."""
        iv = Intervention.from_message({"target": target, "layer": layer, "method": method},
                                       self.model.cfg.n_layers)
        return self._apply(iv, lenses)

    def _apply(self, iv: Intervention, lenses: Sequence[str] | None) -> list[Grid]:
        lenses = tuple(lenses or self.lenses)
        out = []
        for t in self.sequences:
            fwd, mods = iv.hooks(self.model, len(t))
            out.append(compute_grid(self.model, t, lenses=lenses, sublayers=self.sublayers,
                                    fwd_hooks=fwd, module_hooks=mods))
        self.changed, self.changed_label = out, iv.label
        return out

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Answer one message of the view. Types: ``intervene`` {target, layer, method, lens},
        ``reset``, ``movers`` {seq, layer, pos}. Bad requests answer {"type": "error"}."""
        try:
            kind = msg.get("type")
            if kind == "intervene":
                lens = msg.get("lens")
                if lens is not None and lens not in self.lenses:
                    raise InputError(f"unknown lens {lens!r}; the view has {list(self.lenses)}")
                self._apply(Intervention.from_message(msg, self.model.cfg.n_layers),
                            [lens] if lens else None)
                return {"type": "changed", "label": self.changed_label}
            if kind == "reset":
                self.changed, self.changed_label = None, ""
                return {"type": "changed", "label": ""}
            if kind == "movers":
                return self._movers_reply(msg)
            raise InputError(f"unknown message type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            return {"type": "error", "message": str(exc).strip("'\"")}

    def _movers_reply(self, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            seq, layer, pos = int(msg["seq"]), int(msg["layer"]), int(msg["pos"])
        except (KeyError, TypeError, ValueError):
            raise InputError("movers needs integer seq, layer and pos") from None
        if not 0 <= seq < len(self.sequences):
            raise InputError(f"sequence {seq} is outside 0..{len(self.sequences) - 1}")
        t = self.sequences[seq]
        if not 0 <= pos < len(t) or not 0 <= layer < self.model.cfg.n_layers:
            raise InputError(f"cell (layer {layer}, pos {pos}) is outside the grid")
        data = movement.movers(self.model, t, pos=pos, layers=[layer], top=self.movers_top)[layer]
        return {"type": "movers", "seq": seq, "layer": layer, "pos": pos, "data": data}

    def compare(self, *, seq: int = 0, pos: int = -1, lens: str = "logit") -> pd.DataFrame:
        """Per block, the top-1 token, rank_final and NDCG@10 of one position in the original and
        the changed run side by side (``pos`` -1 = the last position)."""
        if self.changed is None:
            raise InputError("no intervention has been applied; call intervene() first")
        pos = pos % len(self.sequences[seq])
        a = _top1_by_layer(self.frame(), seq, pos, lens)
        b = _top1_by_layer(self.frame(changed=True), seq, pos, lens)
        return a.join(b, lsuffix="_original", rsuffix="_changed")

    # -------------------------------------------------------------- exports

    def frame(self, *, changed: bool = False) -> pd.DataFrame:
        """One row per (sequence, row, position, lens, rank in the top-10): ``seq, layer, hook,
        pos, input_token, lens, rank, token, token_id, value`` plus `MEASURES` (the cell's)."""
        grids = self.changed if changed else self.grids
        if grids is None:
            raise InputError("no intervention has been applied; call intervene() first")
        return pd.concat([_grid_frame(g, i, self.labels) for i, g in enumerate(grids)],
                         ignore_index=True)


def _top1_by_layer(frame: pd.DataFrame, seq: int, pos: int, lens: str) -> pd.DataFrame:
    cell = frame[(frame.seq == seq) & (frame.pos == pos) & (frame.lens == lens) & (frame["rank"] == 0)
                 & frame.hook.str.endswith("hook_resid_post")]
    return cell.set_index("layer")[["token", "rank_final", "ndcg@10"]]


def _known_near(g: Grid, n_near: int) -> torch.Tensor | None:
    """The distance_raw top tokens of every resid_post row (the nearest W_E rows of h^1..h^L)."""
    if "distance_raw" not in g.lenses or n_near > g.top_ids.shape[-1]:
        return None
    rows = [r for r, (_, hook) in enumerate(g.rows) if hook.endswith("hook_resid_post")]
    return torch.as_tensor(g.top_ids[rows, :, g.lenses.index("distance_raw"), :n_near])


def _grid_frame(g: Grid, seq: int, labels) -> pd.DataFrame:
    n_row, n_pos, n_lens, k = g.top_ids.shape
    idx = np.indices((n_row, n_pos, n_lens, k)).reshape(4, -1)
    r, p, li, rank = idx
    ids = g.top_ids.reshape(-1)
    uniq, inv = np.unique(np.concatenate([ids, g.token_ids]), return_inverse=True)
    text = np.asarray(labels(uniq.tolist()), dtype=object)
    tok_text = text[inv[len(ids):]]
    cell = (r, p, li)
    return pd.DataFrame({
        "seq": seq, "layer": np.asarray([g.rows[i][0] for i in range(n_row)])[r],
        "hook": np.asarray([g.rows[i][1] for i in range(n_row)], dtype=object)[r],
        "pos": p, "input_token": tok_text[p], "lens": np.asarray(g.lenses, dtype=object)[li],
        "rank": rank, "token": text[inv[:len(ids)]], "token_id": ids,
        "value": g.top_values.reshape(-1),
        "rank_final": g.rank_final[cell], "rank_next": g.rank_next[cell],
        "ndcg@10": g.ndcg[cell], "jsd": g.jsd[cell],
        "step_norm": g.step_norm[r, p], "attn_share": g.attn_share[r, p],
    })
