"""Batch records as files of data: every kind of value a record holds comes back equal (type,
dtype, shape, index, tuple vs list), the analysis's own records included, without unpickling
anything; a damaged file, an unknown tag or a class outside the reader's list is a one-line
error naming the file."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from geomlens.runner.record_log import RecordLog, inputs_digest
from geomlens.runner.records import RecordError, decode_record, encode_record

LENGTHS = (10, 7, 12, 5, 9, 11)


@dataclass
class Part:
    name: str
    values: np.ndarray
    extra: dict | None = None


def assert_same(a, b, where="record"):
    """``a`` and ``b`` are equal values of the same types, all the way down."""
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_index_type=True,
                                      check_column_type=True, check_categorical=True)
        assert list(a.dtypes) == list(b.dtypes), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a record was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def _every_kind():
    base = torch.arange(12, dtype=torch.float32).view(3, 4)
    frame = pd.DataFrame({"segment": pd.Categorical(["b", "a", "b"], categories=["b", "a", "z"]),
                          "label": np.array(["x", "y", "z"], dtype=object),
                          "pos": np.array([0, 5, 7], dtype=np.int64),
                          "ndcg": np.array([0.25, np.nan, 1 / 3], dtype=np.float32),
                          "flag": [True, False, True]})
    return {
        "scalars": [None, True, 0, -3, 2**62, 0.1, -0.0, float("nan"), float("inf"), "ü"],
        ("tuple", 1): (1, (2.5, "a"), []),
        3: Part("p", np.zeros((2, 0)), extra={"z": np.float32(0.1), "n": np.int64(7)}),
        "tensors": [base, base[:, 1], base.T, torch.zeros(0, 3), torch.tensor(2.5),
                    torch.arange(5).to(torch.bfloat16), torch.arange(4, dtype=torch.uint8),
                    torch.tensor([True, False])],
        "arrays": [np.arange(6, dtype=np.float64).reshape(2, 3), np.array([1, 2], dtype=np.uint16),
                   np.array(["seg-1", "seg-2"], dtype=object), np.array(["ab", "c"]),
                   np.array([[True], [False]])],
        "frames": [frame, frame.iloc[[2, 0]], pd.DataFrame({"a": pd.Series([], dtype="float64")})],
    }


def test_every_kind_of_value_comes_back_equal(monkeypatch):
    record = _every_kind()
    data = encode_record(record)
    _no_unpickling(monkeypatch)
    assert_same(decode_record(data, (Part,), name="x"), record)


def test_the_analysis_records_come_back_equal(tiny_model, tmp_path, monkeypatch, one_thread):
    from geomlens.analysis import AnalyzeConfig, analyze_tokens, pipeline

    kept = []
    fold = pipeline._AnalysisState.fold
    monkeypatch.setattr(pipeline._AnalysisState, "fold",
                        lambda self, record: (kept.append(record), fold(self, record))[1])
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in LENGTHS]
    cfg = AnalyzeConfig(model="tiny", n_bootstrap=20, n_permutations=4, control_positions=25,
                        batch_size=2, layer_lens_positions=20, calibration_positions=10,
                        trajectory_segments=3)
    analyze_tokens(tiny_model, seqs, cfg, records=tmp_path / "records")
    log = RecordLog(tmp_path / "records", pipeline.RECORD_TYPES)
    assert len(kept) == log.count(10) == 3
    assert kept[0].calibration.vectors and kept[0].lens is not None and len(kept[0].null)
    assert kept[0].trajectory is not None and kept[2].trajectory is None
    _no_unpickling(monkeypatch)
    for i, record in enumerate(kept):
        assert_same(log.read(i), record, f"batch {i}")


def _tagged(data: bytes, edit) -> bytes:
    """``data`` with its record JSON changed by ``edit``."""
    from safetensors.torch import load, save

    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + size])["__metadata__"]
    return save(load(data), metadata={"format": meta["format"],
                                      "record": json.dumps(edit(json.loads(meta["record"])))})


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[: len(d) // 2], "cannot read the batch record"),
    (lambda d: b"", "truncated"),
    (lambda d: pickle.dumps({"a": 1}), "cannot read the batch record"),
    (lambda d: _tagged(d, lambda t: {"type": "os.system", "items": []}), "unknown type tag 'os.system'"),
    (lambda d: _tagged(d, lambda t: {**t, "name": "Popen"}), "class 'Popen' is not one a batch record may hold"),
])
def test_a_bad_file_is_a_one_line_error_naming_it(tmp_path, damage, message):
    log = RecordLog(tmp_path / "records", (Part,))
    log.keeping(lambda i, record: None)(0, Part("p", np.ones(3)))
    path = log.path(0)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RecordError) as err:
        log.read(0)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and message in text, text


def test_a_record_holding_code_is_refused():
    with pytest.raises(TypeError, match="cannot hold a function"):
        encode_record({"f": test_a_record_holding_code_is_refused})
    with pytest.raises(TypeError, match="strings only"):
        encode_record(np.array([object()], dtype=object))


def test_the_log_counts_records_from_batch_0_without_a_gap(tmp_path):
    log = RecordLog(tmp_path / "records")
    keep = log.keeping(lambda i, record: None)
    for i in (0, 1, 3):
        keep(i, {"batch": i})
    assert log.count(10) == 2 and log.count(1) == 1
    seen = []
    log.replay(2, lambda i, record: seen.append((i, record)))
    assert seen == [(0, {"batch": 0}), (1, {"batch": 1})]
    assert not list((tmp_path / "records").glob(".*"))  # no temporary file left behind
    assert log.setting("position_chunk", 7) == 7 and log.setting("position_chunk", 9) == 7
    log.remove()
    assert not (tmp_path / "records").exists()


def test_a_folder_of_other_inputs_is_refused(tmp_path):
    seqs = [torch.arange(5), torch.arange(3)]
    key = inputs_digest
    assert key(seqs, {"a": 1}) == key([torch.arange(5), torch.arange(3)], {"a": 1})
    assert key(seqs, {"a": 1}) != key([torch.arange(5), torch.tensor([0, 1, 3])], {"a": 1})
    assert key(seqs, {"a": 1}) != key(seqs, {"a": 2})
    first = RecordLog(tmp_path / "records", inputs=key(seqs, {"a": 1}))
    first.keeping(lambda i, record: None)(0, {"batch": 0})
    assert first.count(3) == 1
    other = RecordLog(tmp_path / "records", inputs=key(seqs, {"a": 2}))
    with pytest.raises(RecordError, match="its records were computed from other inputs") as err:
        other.count(3)
    assert "\n" not in str(err.value) and str(tmp_path / "records") in str(err.value)
