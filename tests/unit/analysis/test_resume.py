"""An interrupted ``geomlens analyze`` is marked failed and, resumed with ``--resume``, computes
only the batches it had not folded and writes the same files, byte for byte, as a run that was
never interrupted; a resume with another config, or from a damaged record, is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from geomlens.analysis import pipeline
from geomlens.cli import main
from geomlens.runner.records import RecordError

FLAGS = ["analyze", "--domains", "news,technical", "--n-segments", "3", "--max-tokens", "24",
         "--batch-size", "2", "--device", "cpu", "--n-bootstrap", "50", "--n-permutations", "15",
         "--control-positions", "40", "--spearman-positions", "30",
         "--layer-lens-positions", "40", "--trajectory-segments", "3",
         "--calibration-positions", "20", "--position-chunk", "7"]
# 6 segments in 3 batches
TABLES = ["summary.json", "per_segment.csv", "controls.csv", "layers.csv",
          "calibration_per_segment.csv", "per_layer.csv", "per_layer_domain.csv", "table61.md"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import train_tiny_run

    run_dir, _, _ = train_tiny_run(tmp_path_factory.mktemp("resume") / "model", vocab_size=64,
                                   steps=2)
    return run_dir


@pytest.fixture()
def computed(monkeypatch):
    """The batches computed in this test; a batch number in ``stop`` raises KeyboardInterrupt
    (Ctrl-C) before it is computed."""
    seen: dict = {"batches": [], "stop": set()}
    compute = pipeline._AnalysisState.compute

    def counting(self, b, *args):
        if b in seen["stop"]:
            raise KeyboardInterrupt
        seen["batches"].append(b)
        return compute(self, b, *args)

    monkeypatch.setattr(pipeline._AnalysisState, "compute", counting)
    return seen


def _interrupted(model: Path, out: Path, computed: dict, at: int) -> None:
    computed["stop"] = {at}
    assert main([*FLAGS, "--model", str(model), "--out", str(out)]) == 130
    assert "interrupted" in (out / "failed").read_text() and not (out / "done").exists()
    assert sorted(p.name for p in (out / "records").glob("batch-*")) == [
        f"batch-{i:06d}.safetensors" for i in range(at)]
    computed["stop"], computed["batches"] = set(), []


def test_an_interrupted_analysis_resumes_exactly(model, tmp_path, computed, one_thread):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main([*FLAGS, "--model", str(model), "--out", str(whole)]) == 0
    assert computed["batches"] == [0, 1, 2] and not (whole / "records").exists()
    _interrupted(model, resumed, computed, at=2)
    assert main([*FLAGS, "--model", str(model), "--out", str(resumed), "--resume"]) == 0
    assert computed["batches"] == [2]  # batches 0 and 1 were read back, not recomputed
    assert (resumed / "done").exists() and not (resumed / "failed").exists()
    assert not (resumed / "records").exists()
    for name in TABLES:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert pd.read_parquet(resumed / "per_token.parquet").equals(
        pd.read_parquet(whole / "per_token.parquet"))
    env = json.loads((resumed / "env.json").read_text())
    assert env["resumed_from"] and len(env["history"]) == 1


def test_a_resume_with_another_config_is_refused(model, tmp_path, computed, capsys):
    out = tmp_path / "run"
    _interrupted(model, out, computed, at=1)
    capsys.readouterr()
    code = main([*FLAGS, "--model", str(model), "--out", str(out), "--resume", "--seed", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and computed["batches"] == []
    assert "\n" not in err and err.startswith("geomlens analyze: ")
    assert "config.json differs from the requested config" in err
    assert (out / "records" / "batch-000000.safetensors").exists()  # nothing was lost


def test_a_damaged_record_is_a_one_line_error_naming_it(model, tmp_path, computed, capsys):
    out = tmp_path / "run"
    _interrupted(model, out, computed, at=2)
    damaged = out / "records" / "batch-000001.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    capsys.readouterr()
    assert main([*FLAGS, "--model", str(model), "--out", str(out), "--resume"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("geomlens analyze: error: cannot read the batch record "
                            f"{damaged}: the file is truncated"), error
    assert str(damaged) in (out / "failed").read_text()


def test_keep_records_keeps_them(model, tmp_path, computed):
    out = tmp_path / "run"
    assert main([*FLAGS, "--model", str(model), "--out", str(out), "--keep-records"]) == 0
    assert len(list((out / "records").glob("batch-*.safetensors"))) == 3


def test_analyze_tokens_resumes_with_the_chunk_it_started_with(tiny_model, tmp_path, computed,
                                                               monkeypatch, one_thread):
    """The position chunk fitted to the free memory is kept for the resumed call (a different
    chunk would split the control sums differently)."""
    from geomlens.analysis import AnalyzeConfig, analyze_tokens

    chunks = iter([5, 5, 3, 3])  # what the memory planner would fit: the machine changed
    monkeypatch.setattr(pipeline, "_position_chunk", lambda *args: next(chunks))
    seqs = [torch.arange(n) % 50 for n in (10, 7, 12, 5, 9, 11)]
    cfg = AnalyzeConfig(model="tiny", n_bootstrap=20, n_permutations=4, control_positions=25,
                        batch_size=2, trajectories=False, keep_per_token=True)
    whole = analyze_tokens(tiny_model, seqs, cfg)
    computed["stop"] = {1}
    with pytest.raises(KeyboardInterrupt):
        analyze_tokens(tiny_model, seqs, cfg, records=tmp_path / "records")
    computed["stop"], computed["batches"] = set(), []
    resumed = analyze_tokens(tiny_model, seqs, cfg, records=tmp_path / "records")
    assert computed["batches"] == [1, 2] and resumed.info["position_chunk"] == 5
    assert resumed.info == whole.info
    for name in ("per_segment", "controls", "per_token"):
        pd.testing.assert_frame_equal(getattr(resumed, name), getattr(whole, name),
                                      check_exact=True)
    # the folder of a call on other tokens (a text edited between the two calls) is refused
    seqs[3] = seqs[3].flip(0)
    with pytest.raises(RecordError, match="computed from other inputs"):
        analyze_tokens(tiny_model, seqs, cfg, records=tmp_path / "records")
