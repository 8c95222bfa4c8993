"""``kv`` and ``ablate`` keep their batch records like ``analyze`` (tests/unit/analysis/
test_resume.py): interrupted after some records were stored, a run is marked failed; resumed,
it reads those back, computes only the rest and writes the files of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geomlens.cli import main
from geomlens.runner import record_log
from geomlens.runner.record_log import RecordLog

COMMON = ["--domains", "news,technical", "--n-segments", "3", "--max-tokens", "24",
          "--batch-size", "2", "--device", "cpu"]
CASES = {  # command line, tables, records of a whole run (3 batches per pass)
    "kv": (["kv", *COMMON, "--n-bootstrap", "50", "--sweep"],
           ["per_segment.csv", "losses.csv", "sweep_layer.csv", "sweep_ge_m.csv"], 12),
    "ablate": (["ablate", *COMMON, "--method", "resample", "--sweep"], ["ablation.csv"], 3),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import train_tiny_run

    run_dir, _, _ = train_tiny_run(tmp_path_factory.mktemp("records") / "model", vocab_size=64,
                                   steps=2)
    return run_dir


@pytest.fixture()
def counts(monkeypatch):
    """Records stored and read in this test; after ``stop`` stored records, Ctrl-C."""
    seen = {"stored": 0, "read": 0, "stop": None}
    keeping, read = RecordLog.keeping, RecordLog.read

    def counting_keeping(self, fold):
        keep = keeping(self, fold)

        def fold_and_keep(i, record):
            keep(i, record)
            seen["stored"] += 1
            if seen["stored"] == seen["stop"]:
                raise KeyboardInterrupt

        return fold_and_keep

    def counting_read(self, i):
        seen["read"] += 1
        return read(self, i)

    monkeypatch.setattr(record_log.RecordLog, "keeping", counting_keeping)
    monkeypatch.setattr(record_log.RecordLog, "read", counting_read)
    return seen


def _summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_time_s", None)  # kv's clock
    return summary


@pytest.mark.parametrize("name", list(CASES))
def test_an_interrupted_run_resumes_exactly(name, model, tmp_path, counts, one_thread):
    args, tables, n_records = CASES[name]
    args = [*args, "--model", str(model)]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main([*args, "--out", str(whole)]) == 0
    assert counts["stored"] == n_records and not (whole / "records").exists()
    stop = n_records // 2 + 1  # kv: in the middle of its second pass
    counts.update(stored=0, stop=stop)
    assert main([*args, "--out", str(resumed)]) == 130
    assert "interrupted" in (resumed / "failed").read_text()
    assert len(list((resumed / "records").rglob("batch-*.safetensors"))) == stop
    counts.update(stored=0, stop=None)
    assert main([*args, "--out", str(resumed), "--resume"]) == 0
    assert (counts["read"], counts["stored"]) == (stop, n_records - stop)
    assert (resumed / "done").exists() and not (resumed / "records").exists()
    assert _summary(resumed) == _summary(whole)
    for table in tables:
        assert (resumed / table).read_bytes() == (whole / table).read_bytes(), table
