"""A batch's record as one file of data, never code: JSON for its structure, safetensors for its
tensors and arrays, parquet for its DataFrames (`encode_record` / `decode_record`).

The file is a safetensors file. Its metadata holds the record as JSON, in which a JSON string,
number, boolean or null stands for itself and everything else is an object tagged by ``"type"``:

    list, tuple         {"type": "list" | "tuple", "items": [...]}
    dict                {"type": "dict", "items": [[key, value], ...]}  (any keys, in order)
    tensor              {"type": "tensor", "key": "3"}: tensor "3" of the file (dtype, shape)
    numpy array         {"type": "ndarray", "key": "4"}, or for strings
                        {"type": "ndarray_str", "dtype": "object" | "<U5", "shape": [...],
                         "items": [...]}
    numpy scalar        {"type": "npscalar", "dtype": "float32", "value": 0.5}
    float NaN / ±Inf    {"type": "float", "value": "nan" | "inf" | "-inf"}
    DataFrame           {"type": "frame", "key": "5", "dtypes": {...}}: tensor "5" holds the
                        bytes of a parquet file written by pyarrow (dtypes, categories, index)
    dataclass           {"type": "dataclass", "name": "BatchRecord", "fields": {...}}

A dataclass is rebuilt only from the classes the reader passes (``types``, by ``__name__``); a
file naming any other class, an unknown tag or a damaged byte fails with one line naming the
file. Nothing is unpickled and nothing named by a file is imported.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from geomlens.errors import InputError

FORMAT = "geomlens-record/1"
"""The ``format`` entry of every record file's metadata."""


class RecordError(InputError):
    """A record file cannot be read back (damaged, from another version, or not a record)."""


def encode_record(record: Any) -> bytes:
    """The bytes of ``record``'s file (see the module docstring)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(record, tensors)
    return save(tensors, metadata={"format": FORMAT, "record": json.dumps(tree)})


def decode_record(data: bytes, types: Iterable[type], *, name: str | Path) -> Any:
    """The record in ``data`` (bytes written by `encode_record`); ``types``: the dataclasses it
    may hold. ``name`` (the file) is named by the one-line error a bad file raises."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        header = _header(data)
        tensors = load(data)
        if header.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {header.get('format')!r})")
        return _decode(json.loads(header["record"]), tensors, {t.__name__: t for t in types})
    except (SafetensorError, ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise RecordError(f"cannot read the batch record {name}: {text}; delete it (and the "
                          "records after it) to recompute those batches") from None


def _header(data: bytes) -> dict[str, str]:
    """The metadata of a safetensors file, read by hand (the length, then that much JSON)."""
    if len(data) < 8:
        raise ValueError("the file is truncated")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("the file is truncated")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, np.generic):  # before float: np.float64 is a float
        return {"type": "npscalar", "dtype": obj.dtype.str, "value": _encode(obj.item(), tensors)}
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"type": "float", "value": repr(obj)}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return {"type": type(obj).__name__ if type(obj) in (list, tuple) else _refuse(obj),
                "items": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, dict):
        return {"type": "dict", "items": [[_encode(k, tensors), _encode(v, tensors)]
                                          for k, v in obj.items()]}
    if isinstance(obj, torch.Tensor):
        return {"type": "tensor", "key": _add(tensors, obj.detach().cpu())}
    if isinstance(obj, np.ndarray):
        return _encode_array(obj, tensors)
    if isinstance(obj, pd.DataFrame):
        return _encode_frame(obj, tensors)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": "dataclass", "name": type(obj).__name__,
                "fields": {f.name: _encode(getattr(obj, f.name), tensors)
                           for f in dataclasses.fields(obj) if f.init}}
    return _refuse(obj)


def _refuse(obj: Any):
    raise TypeError(f"a batch record cannot hold a {type(obj).__name__}")


def _add(tensors: dict[str, torch.Tensor], tensor: torch.Tensor) -> str:
    """Store a copy (safetensors refuses tensors that share memory) under the next key."""
    key = str(len(tensors))
    tensors[key] = tensor.contiguous().clone()
    return key


def _encode_array(array: np.ndarray, tensors: dict[str, torch.Tensor]) -> dict:
    if array.dtype.kind in "OU":
        if array.dtype.kind == "O" and not all(isinstance(v, str) for v in array.flat):
            raise TypeError("a batch record's object arrays must hold strings only")
        return {"type": "ndarray_str", "dtype": array.dtype.str, "shape": list(array.shape),
                "items": [str(v) for v in array.flat]}
    return {"type": "ndarray", "key": _add(tensors, torch.from_numpy(np.ascontiguousarray(array)))}


def _encode_frame(frame: pd.DataFrame, tensors: dict[str, torch.Tensor]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame), sink)
    data = np.frombuffer(sink.getvalue().to_pybytes(), dtype=np.uint8)
    return {"type": "frame", "key": _add(tensors, torch.from_numpy(data.copy())),
            "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()}}


def _decode(node: Any, tensors: dict[str, torch.Tensor], types: dict[str, type]) -> Any:
    if not isinstance(node, dict):
        if isinstance(node, list):
            raise ValueError("an untagged list")
        return node
    kind = node["type"]
    if kind in ("list", "tuple"):
        items = [_decode(v, tensors, types) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {_decode(k, tensors, types): _decode(v, tensors, types) for k, v in node["items"]}
    if kind == "float":
        return float({"nan": "nan", "inf": "inf", "-inf": "-inf"}[node["value"]])
    if kind == "tensor":
        return tensors[node["key"]]
    if kind == "ndarray":
        return tensors[node["key"]].numpy()
    if kind == "ndarray_str":
        return np.array(node["items"], dtype=np.dtype(node["dtype"])).reshape(node["shape"])
    if kind == "npscalar":
        return np.dtype(node["dtype"]).type(_decode(node["value"], tensors, types))
    if kind == "frame":
        return _decode_frame(tensors[node["key"]], node["dtypes"])
    if kind == "dataclass":
        return _decode_dataclass(node, tensors, types)
    raise ValueError(f"unknown type tag {kind!r}")


def _decode_frame(data: torch.Tensor, dtypes: dict[str, str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pq.read_table(pa.BufferReader(data.numpy().tobytes())).to_pandas()
    objects = [c for c, t in dtypes.items() if t == "object" and str(frame[c].dtype) != "object"]
    return frame.astype({c: object for c in objects}) if objects else frame


def _decode_dataclass(node: dict, tensors: dict[str, torch.Tensor], types: dict[str, type]) -> Any:
    cls = types.get(node["name"])
    if cls is None:
        raise ValueError(f"class {node['name']!r} is not one a batch record may hold "
                         f"({', '.join(sorted(types)) or 'none'})")
    return cls(**{k: _decode(v, tensors, types) for k, v in node["fields"].items()})
