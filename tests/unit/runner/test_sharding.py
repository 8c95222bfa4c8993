"""Sharded commands: ``analyze``, ``kv`` and ``ablate`` launched by torchrun with two gloo ranks
on the CPU write the same summary.json (and tables) as one process; a failure on either rank
marks the run failed on rank 0 and stops both ranks (no hang); the progress bar is rank 0's.

One torchrun launch runs every case but the killed rank (the driver below calls
`geomlens.cli.main` once per job, as ``python -m geomlens`` does, in one process group), so the
two interpreters start once; the killed rank ends its launch and has one of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from geomlens.cli import main
from geomlens.runner.sharding import to_cpu

ROOT = Path(__file__).resolve().parents[3]

COMMON = ["--domains", "news,technical", "--n-segments", "3", "--max-tokens", "24",
          "--batch-size", "2", "--device", "cpu"]
ANALYZE = ["analyze", *COMMON, "--n-bootstrap", "50", "--n-permutations", "15",
           "--control-positions", "40", "--spearman-positions", "30",
           "--layer-lens-positions", "40", "--trajectory-segments", "3",
           "--calibration-positions", "20", "--position-chunk", "7"]
KV = ["kv", *COMMON, "--n-bootstrap", "50", "--sweep"]
ABLATE = ["ablate", *COMMON, "--method", "resample", "--sweep"]
# 6 segments in 3 batches: rounds of 2 ranks take batches (0, 1) and (2, -), an uneven last round

DRIVER = textwrap.dedent("""
    import json, os, sys
    from geomlens.analysis import command, pipeline
    from geomlens.cli import main
    from geomlens.runner import record_log

    rank = int(os.environ["RANK"])
    compute, fold, segments = (pipeline._AnalysisState.compute, pipeline._AnalysisState.fold,
                               command.load_model_segments)

    seen, reads = [], []
    keeping, read = record_log.RecordLog.keeping, record_log.RecordLog.read

    def failing_keeping(self, fold):
        keep = keeping(self, fold)

        def fold_and_keep(i, record):
            keep(i, record)
            raise RuntimeError("planted failure after the first record")

        return fold_and_keep

    def counting_read(self, i):
        reads.append(i)
        return read(self, i)

    record_log.RecordLog.read = counting_read

    def counting_compute(self, b, *args):
        seen.append(b)
        return compute(self, b, *args)

    def failing_compute(self, b, *args):
        if rank == 1 and b == 1:
            raise RuntimeError("planted failure computing batch 1")
        return compute(self, b, *args)

    def failing_fold(self, record):
        if len(self.acc.segment_tables) == 1:
            raise RuntimeError("planted failure folding batch 1")
        return fold(self, record)

    def failing_segments(cfg, model):
        if rank == 1:
            raise OSError("planted failure reading the text")
        return segments(cfg, model)

    codes, batches = {}, {}
    for name, args, fault in json.load(open(sys.argv[1])):
        pipeline._AnalysisState.compute = failing_compute if fault == "compute" else counting_compute
        pipeline._AnalysisState.fold = failing_fold if fault == "fold" else fold
        command.load_model_segments = failing_segments if fault == "setup" else segments
        record_log.RecordLog.keeping = failing_keeping if fault == "record" else keeping
        seen.clear(), reads.clear()
        codes[name] = main(args)
        batches[name], batches[name + ":read"] = list(seen), list(reads)
    json.dump(codes, open(sys.argv[2] + f".{rank}", "w"))
    json.dump(batches, open(sys.argv[2] + f".batches.{rank}", "w"))
""")


KILLED = textwrap.dedent("""
    import os, sys
    from geomlens.analysis import pipeline
    from geomlens.cli import main

    compute = pipeline._AnalysisState.compute

    def dying_compute(self, b, *args):
        if os.environ["RANK"] == "1" and b == 1:
            os._exit(9)  # no word to the other rank: killed, out of host memory
        return compute(self, b, *args)

    pipeline._AnalysisState.compute = dying_compute
    sys.exit(main(sys.argv[1:]))
""")


def _torchrun(tmp: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    (tmp / "script.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GEOMLENS_RANK_TIMEOUT": "120",
           "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "--redirects=3",
         f"--log-dir={tmp / 'logs'}", str(tmp / "script.py"), *args], env=env,
        capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(directory, rank exit codes by job, rank 0's and rank 1's stderr, launch seconds): the
    two-rank launch and, beside it, the single-process runs."""
    from helpers import train_tiny_run

    tmp = tmp_path_factory.mktemp("sharding")
    model, _, _ = train_tiny_run(tmp / "model", vocab_size=64, steps=2)
    jobs = [(name, [*args, "--model", str(model), "--out", str(tmp / f"{name}-2")], fault)
            for name, args, fault in [
                ("analyze", ANALYZE, None), ("kv", KV, None), ("ablate", ABLATE, None),
                ("compute", ANALYZE, "compute"), ("fold", ANALYZE, "fold"),
                ("setup", ANALYZE, "setup"), ("after", KV, None), ("refold", ANALYZE, "fold")]]
    # a run that failed folding batch 1 resumes: its record of batch 0 is folded from disk;
    # kv and ablate (every rank folds) fail after their first record and resume
    jobs += [("kvstop", [*KV, "--model", str(model), "--out", str(tmp / "kvstop-2")], "record"),
             ("abstop", [*ABLATE, "--model", str(model), "--out", str(tmp / "abstop-2")], "record")]
    jobs += [(f"resume-{name}", [*args, "--model", str(model), "--out", str(tmp / out), "--resume"],
              None) for name, args, out in [("analyze", ANALYZE, "refold-2"), ("kv", KV, "kvstop-2"),
                                            ("ablate", ABLATE, "abstop-2")]]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    start = time.monotonic()
    proc = _torchrun(tmp, DRIVER, str(tmp / "jobs.json"), str(tmp / "codes"))
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    codes = [json.loads((tmp / f"codes.{rank}").read_text()) for rank in (0, 1)]
    logs = [next((tmp / "logs").rglob(f"attempt_0/{rank}/stderr.log")).read_text()
            for rank in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: float32 reductions depend on the thread count
    try:
        for name, args in [("analyze", ANALYZE), ("kv", KV), ("ablate", ABLATE)]:
            assert main([*args, "--model", str(model), "--out", str(tmp / f"{name}-1")]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp, codes, logs, seconds


def _summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_time_s", None)  # kv's clock, the only field that differs by nature
    return summary


@pytest.mark.parametrize(("name", "tables"), [
    ("analyze", ["per_segment.csv", "controls.csv", "layers.csv", "calibration_per_segment.csv",
                 "per_layer.csv", "table61.md"]),
    ("kv", ["per_segment.csv", "losses.csv", "sweep_layer.csv", "sweep_ge_m.csv"]),
    ("ablate", ["ablation.csv"]),
])
def test_two_ranks_equal_one_process(runs, name, tables):
    tmp, codes, _, _ = runs
    assert codes[0][name] == codes[1][name] == 0
    one, two = tmp / f"{name}-1", tmp / f"{name}-2"
    assert (two / "done").exists() and not (two / "failed").exists()
    assert json.loads((two / "env.json").read_text())["world_size"] == 2
    summary = _summary(two)
    assert summary == _summary(one)
    for table in tables:
        assert (two / table).read_text() == (one / table).read_text(), table
    if name == "analyze":
        per_token = pd.read_parquet(two / "per_token.parquet")
        assert per_token.equals(pd.read_parquet(one / "per_token.parquet"))
        assert summary["info"]["n_segments"] == 6 and len(per_token) > 0
        controls = summary["results"][0]["controls"]
        assert controls["n_positions"] == 40 and controls["n_permutations"] == 15
        assert any(r.get("temperature") for r in summary["results"])


@pytest.mark.parametrize(("name", "message"), [
    ("compute", "rank 1 of 2 failed: RuntimeError: planted failure computing batch 1"),
    ("fold", "planted failure folding batch 1"),
    ("setup", "rank 1 of 2 failed: OSError: planted failure reading the text"),
])
def test_a_failing_rank_fails_the_run(runs, name, message):
    tmp, codes, _, _ = runs
    run_dir = tmp / f"{name}-2"
    assert (run_dir / "failed").exists() and not (run_dir / "done").exists()
    assert message in (run_dir / "failed").read_text()
    assert codes[0][name] != 0 and codes[1][name] != 0  # both ranks stopped
    # and neither waited for the other: the next job of the same process group ran
    assert codes[0]["after"] == codes[1]["after"] == 0 and (tmp / "after-2" / "done").exists()


@pytest.mark.parametrize(("name", "failed", "tables"), [
    ("analyze", "refold", ["per_segment.csv", "controls.csv", "layers.csv",
                           "calibration_per_segment.csv", "per_layer.csv", "table61.md"]),
    ("kv", "kvstop", ["per_segment.csv", "losses.csv", "sweep_layer.csv", "sweep_ge_m.csv"]),
    ("ablate", "abstop", ["ablation.csv"]),
])
def test_a_failed_run_resumes_on_two_ranks(runs, name, failed, tables):
    tmp, codes, _, _ = runs
    assert codes[0][failed] != 0 and codes[1][failed] != 0
    assert codes[0][f"resume-{name}"] == codes[1][f"resume-{name}"] == 0
    resumed, whole = tmp / f"{failed}-2", tmp / f"{name}-1"
    computed = [json.loads((tmp / f"codes.batches.{rank}").read_text()) for rank in (0, 1)]
    # rank 0 read back batch 0 (the one record stored before the failure), rank 1 nothing
    assert (computed[0][f"resume-{name}:read"], computed[1][f"resume-{name}:read"]) == ([0], [])
    if name == "analyze":
        assert (computed[0]["refold"], computed[1]["refold"]) == ([0], [1])
        assert (computed[0]["resume-analyze"], computed[1]["resume-analyze"]) == ([1], [2])
    assert (resumed / "done").exists() and not (resumed / "failed").exists()
    assert not (resumed / "records").exists()
    assert _summary(resumed) == _summary(whole)
    for table in tables:
        assert (resumed / table).read_text() == (whole / table).read_text(), table


def test_no_rank_waited_out_the_timeout(runs):
    _, _, logs, seconds = runs
    assert "no word from the other ranks" not in logs[0] + logs[1]
    assert seconds < 300, seconds  # 7 jobs, about 45 s at load 4


def test_progress_bar_on_rank_0_only(runs):
    _, _, logs, _ = runs
    bars = ["analyze:   0%|          | 0/3 [", "ablate (4 conditions):   0%|          | 0/3 ["]
    assert all(bar in logs[0] for bar in bars) and "analyze: 100%" in logs[0]
    assert not any(bar in logs[1] for bar in bars) and "%|" not in logs[1]


def test_records_cross_as_cpu_data():
    from geomlens.analysis.calibration import CalibrationBatch

    part = CalibrationBatch(0, torch.zeros(2).numpy(), torch.ones(2).numpy(),
                            seq=torch.arange(3), vectors={"h": torch.ones(2, 2)})
    moved = to_cpu({"x": [part, (torch.ones(1), 3)]})
    assert torch.equal(moved["x"][0].vectors["h"], part.vectors["h"])
    assert moved["x"][1][1] == 3 and isinstance(moved["x"][1], tuple)


def test_a_rank_killed_without_a_word_fails_the_run(runs, tmp_path):
    """torchrun stops rank 0 with SIGTERM; rank 0 waits in Python, so it marks the run failed."""
    model = runs[0] / "model"
    start = time.monotonic()
    proc = _torchrun(tmp_path, KILLED, *ANALYZE, "--model", str(model), "--out",
                     str(tmp_path / "run"))
    assert proc.returncode != 0
    assert time.monotonic() - start < 110  # torchrun stopped rank 0 before its timeout
    failed = tmp_path / "run" / "failed"
    assert failed.exists() and "interrupted (SIGTERM)" in failed.read_text()
    assert not (tmp_path / "run" / "done").exists()
