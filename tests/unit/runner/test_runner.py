"""`geomlens run`: dry run, skip finished points, resume interrupted ones, refuse config changes, jobs."""

from __future__ import annotations

import json

import pytest
from helpers import CALLS, FAIL_ENV, read_summary, toy_env, write_configs

from geomlens.cli import main
from geomlens.rundir import is_done
from geomlens.runner.runner import Runner, config_differences, plan
from geomlens.runner.spec import load_experiment

SWEEP = "  seed: [0, 1]\n  mode: [sgd, sign]\n"


def test_dry_run_lists_points_and_runs_nothing(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep=SWEEP)
    before = CALLS["count"]
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert CALLS["count"] == before and not (tmp_path / "runs").exists()
    for name in ["seed=0,mode=sgd", "seed=0,mode=sign", "seed=1,mode=sgd", "seed=1,mode=sign"]:
        assert f"{name}  new  {tmp_path / 'runs' / name}" in out
    assert '"mode": "sign"' in out and '"lr": 0.1' in out  # resolved configs printed


def test_run_writes_run_dirs_and_skips_finished_points(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep=SWEEP)
    before = CALLS["count"]
    assert main(["run", str(cfg)]) == 0
    assert CALLS["count"] == before + 4
    run_dir = tmp_path / "runs" / "seed=1,mode=sign"
    for name in ["config.json", "env.json", "summary.json", "done", "ckpt.pt"]:
        assert (run_dir / name).exists()
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["seed"] == 1 and stored["mode"] == "sign" and stored["opt"] == {"lr": 0.1, "batch": 8}
    assert json.loads((run_dir / "env.json").read_text())["seed"] == 1
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("summary.json")}

    assert main(["run", str(cfg)]) == 0  # rerun: everything done
    assert CALLS["count"] == before + 4
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("summary.json")} == mtimes
    assert capsys.readouterr().out.count("skipped") == 4
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("  done  ") == 4


def test_interrupted_point_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    monkeypatch.setenv(FAIL_ENV, "3")
    assert main(["run", str(cfg)]) == 1  # both points fail at step 3
    run_dir = tmp_path / "runs" / "seed=1"
    assert not is_done(run_dir) and (run_dir / "ckpt.pt").exists()
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("  partial  ") == 2

    monkeypatch.delenv(FAIL_ENV)
    assert main(["run", str(cfg), "--point", "seed=1"]) == 0
    assert is_done(run_dir) and not is_done(tmp_path / "runs" / "seed=0")
    assert (run_dir / "starts.txt").read_text().split() == ["0", "3"]  # resumed from step 3
    env = json.loads((run_dir / "env.json").read_text())
    assert "resumed_from" in env

    assert main(["run", str(cfg), f"out={tmp_path}/clean", "--index", "1"]) == 0  # uninterrupted
    clean = tmp_path / "clean" / "seed=1"
    assert (clean / "starts.txt").read_text().split() == ["0"]
    assert read_summary(run_dir) == read_summary(clean)


def test_changed_config_is_refused(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    assert main(["run", str(cfg), "--index", "0"]) == 0
    done_summary = read_summary(tmp_path / "runs" / "seed=0")
    before = CALLS["count"]
    capsys.readouterr()
    assert main(["run", str(cfg), "opt.lr=0.3"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "seed=0" in err and "opt.lr" in err
    assert CALLS["count"] == before  # nothing ran, not even the new point
    assert not (tmp_path / "runs" / "seed=1").exists()
    assert read_summary(tmp_path / "runs" / "seed=0") == done_summary
    assert main(["run", str(cfg), "opt.lr=0.3", "--dry-run"]) == 0
    assert "conflict" in capsys.readouterr().out


def test_config_differences():
    assert config_differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0}) == ["b.c", "d"]
    assert config_differences({"a": [1, 2]}, {"a": [1, 2]}) == []


def test_unknown_point_name(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    assert main(["run", str(cfg), "--point", "seed=7"]) == 2
    assert "No sweep point named 'seed=7'" in capsys.readouterr().err
    assert main(["run", str(cfg), "--index", "2"]) == 2


def test_parallel_jobs_run_each_point_in_a_subprocess(tmp_path, monkeypatch):
    toy_env(monkeypatch)
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    before = CALLS["count"]
    assert main(["run", str(cfg), "--jobs", "2"]) == 0
    assert CALLS["count"] == before  # the runs happened in child processes
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / f"seed={seed}"
        assert is_done(run_dir) and (run_dir / "run.log").exists()
        argv = json.loads((run_dir / "env.json").read_text())["argv"]
        assert argv[-2:] == ["--point", f"seed={seed}"]
    # the numbers equal an in-process run of the same point
    assert main(["run", str(cfg), f"out={tmp_path}/seq", "--point", "seed=1"]) == 0
    assert read_summary(tmp_path / "runs" / "seed=1") == read_summary(tmp_path / "seq" / "seed=1")


class FakeProcess:
    """Finishes after a few polls; records how many run at once."""

    running: list[FakeProcess] = []
    peak = 0

    def __init__(self, planned, env):
        self.planned, self.env, self.polls = planned, env, 0
        FakeProcess.running.append(self)
        FakeProcess.peak = max(FakeProcess.peak, len(FakeProcess.running))

    def poll(self):
        self.polls += 1
        if self.polls < 3:
            return None
        if self in FakeProcess.running:
            FakeProcess.running.remove(self)
            self.planned.run_dir.mkdir(parents=True, exist_ok=True)
            (self.planned.run_dir / "done").write_text("")
        return 0


@pytest.mark.parametrize("device, gpus, jobs, peak", [(None, ["0", "1"], 4, 2), ("cpu", ["0", "1"], 3, 3)])
def test_gpu_jobs_never_share_a_gpu(tmp_path, device, gpus, jobs, peak):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1, 2, 3, 4]\n")
    spec = load_experiment(cfg, [f"device={'null' if device is None else device}"])
    launched = []

    def launcher(planned, env):
        launched.append(env["CUDA_VISIBLE_DEVICES"])
        gpus_in_use = [p.env["CUDA_VISIBLE_DEVICES"] for p in FakeProcess.running]
        assert env["CUDA_VISIBLE_DEVICES"] == "" or env["CUDA_VISIBLE_DEVICES"] not in gpus_in_use
        return FakeProcess(planned, env)

    FakeProcess.running, FakeProcess.peak = [], 0
    results = Runner(spec, gpus=gpus, launcher=launcher, poll_interval=0.0).run(jobs=jobs)
    assert [r.status for r in results] == ["ran"] * 5
    assert FakeProcess.peak == peak
    if device is None:  # unset device on a machine with GPUs: each run gets one GPU
        assert set(launched) == set(gpus)
    else:
        assert set(launched) == {""}


def test_cuda_point_without_gpu_is_refused(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    spec = load_experiment(cfg, ["device=cuda"])
    assert [p.status for p in plan(spec)] == ["new", "new"]
    with pytest.raises(Exception, match="no CUDA GPU|no GPU is visible"):
        Runner(spec, gpus=[], launcher=lambda p, e: FakeProcess(p, e)).run(jobs=2)
