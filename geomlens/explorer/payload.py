"""The bytes the view reads: one gzip stream holding a JSON header and the cell arrays.

Layout (after gunzip): uint32 little-endian n, n bytes of UTF-8 JSON, then the arrays, each at
the byte offset its header entry gives (8-byte aligned). Header: ``vocab`` (the token strings
the view needs, with their ``vocab_ids``), ``lenses``, ``seqs`` (per sequence its input tokens,
rows and array directory ``name -> [dtype, offset, shape]``), plus whatever ``extra`` the caller
adds (trajectories, movers). Token ids inside arrays are indices into ``vocab`` (uint16 when
the view needs at most 65,535 distinct tokens, else int32), so the size does not grow with
the vocabulary. Top-10 values are float16 (three significant digits on screen; `Explorer.frame`
holds the float32 values).
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any, Sequence

import numpy as np

from geomlens.explorer.compute import Grid


class _Packer:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, arr: np.ndarray) -> list:
        arr = np.ascontiguousarray(arr)
        pad = (-self.size) % 8
        if pad:
            self.chunks.append(b"\0" * pad)
            self.size += pad
        entry = [arr.dtype.name, self.size, list(arr.shape)]
        data = arr.tobytes()
        self.chunks.append(data)
        self.size += len(data)
        return entry


def _local_vocab(grids: Sequence[Grid], more: Sequence[np.ndarray]) -> np.ndarray:
    parts = [np.concatenate([g.top_ids.ravel(), g.final_top1, g.token_ids]) for g in grids]
    return np.unique(np.concatenate([*parts, *[np.asarray(m).ravel() for m in more]]).astype(np.int64))


F16_MAX = float(np.finfo(np.float16).max)


def _compact(values: np.ndarray) -> np.ndarray:
    """float16 (half the bytes) when every finite value fits its range, else float32 (a large
    model's raw-stream distances can exceed 65,504)."""
    finite = values[np.isfinite(values)]
    return values.astype(np.float16 if not finite.size or np.abs(finite).max() < F16_MAX
                         else np.float32)


def encode(
    grids: Sequence[Grid], labels: Any, *, extra: dict[str, Any] | None = None,
    more_ids: Sequence[np.ndarray] = (),
) -> tuple[bytes, np.ndarray]:
    """gzip(header + arrays) and the global ids of the local vocabulary. ``labels(ids)`` gives
    the printable tokens; ``more_ids`` are other global ids the header refers to (mapped with
    `to_local` by the caller)."""
    vocab = _local_vocab(grids, more_ids)
    idx_dtype = np.uint16 if len(vocab) <= 65535 else np.int32
    local = lambda ids: np.searchsorted(vocab, np.asarray(ids)).astype(idx_dtype)  # noqa: E731
    pack, seqs = _Packer(), []
    for g in grids:
        arrays = {
            "top_ids": pack.add(local(g.top_ids)),
            "top_values": pack.add(_compact(g.top_values)),
            "rank_final": pack.add(g.rank_final.astype(np.int32)),
            "rank_next": pack.add(g.rank_next.astype(np.int32)),
            "ndcg": pack.add(g.ndcg.astype(np.float16)),
            "jsd": pack.add(g.jsd.astype(np.float16)),
            "step_norm": pack.add(g.step_norm.astype(np.float32)),
            "attn_share": pack.add(g.attn_share.astype(np.float32)),
        }
        seqs.append({"tokens": local(g.token_ids).tolist(), "final_top1": local(g.final_top1).tolist(),
                     "rows": [[layer, hook.split(".")[-1].removeprefix("hook_")] for layer, hook in g.rows],
                     "arrays": arrays})
    header = {"vocab": labels(vocab.tolist()), "vocab_ids": vocab.tolist(),
              "lenses": list(grids[0].lenses), "seqs": seqs, **(extra or {})}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    raw = struct.pack("<I", len(head)) + head
    pad = (-len(raw)) % 8
    body = raw + b"\0" * pad + b"".join(pack.chunks)
    return gzip.compress(body, compresslevel=6, mtime=0), vocab


def decode(payload: bytes) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """The header and each sequence's arrays (the view's reading, for tests)."""
    body = gzip.decompress(payload)
    (n,) = struct.unpack("<I", body[:4])
    header = json.loads(body[4:4 + n])
    start = 4 + n + (-(4 + n)) % 8
    seqs = []
    for seq in header["seqs"]:
        seqs.append({name: np.frombuffer(body, dtype=dt, count=int(np.prod(shape)),
                                         offset=start + off).reshape(shape)
                     for name, (dt, off, shape) in seq["arrays"].items()})
    return header, seqs
