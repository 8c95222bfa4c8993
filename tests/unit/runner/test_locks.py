"""One lock per run directory: two `geomlens run` processes on one `out` split the points or
wait, and never run one point twice; a resumed run refuses a directory another process runs."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest
from helpers import SLEEP_ENV, toy_env, write_configs

from geomlens.rundir import failure, is_done
from geomlens.runner.locks import RunBusyError, is_locked, lock_path, run_lock


def test_two_runners_on_one_out_never_share_a_point(tmp_path, monkeypatch):
    toy_env(monkeypatch)
    config = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1, 2, 3]\n")
    env = dict(os.environ, **{SLEEP_ENV: "0.3"})
    procs = [subprocess.Popen([sys.executable, "-m", "geomlens", "run", str(config)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for seed in range(4):
        point = tmp_path / "runs" / f"seed={seed}"
        assert is_done(point) and failure(point) is None
        # the toy appends its start step once per run: one run from scratch, never resumed
        assert (point / "starts.txt").read_text() == "0\n", seed
    ran = [sum(line.split()[:1] == ["ran"] for line in out.splitlines()) for out, _ in outputs]
    assert sum(ran) == 4, outputs  # every point ran exactly once, in one of the two runners


def _hold(path, started, release):
    with run_lock(path):
        started.set()
        release.wait(30)


def test_a_locked_directory_is_refused_or_waited_for(tmp_path):
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "r", started, release))
    holder.start()
    try:
        assert started.wait(30)
        assert is_locked(tmp_path / "r")
        with pytest.raises(RunBusyError, match="another process"):
            with run_lock(tmp_path / "r"):
                pass
    finally:
        release.set()
        holder.join(30)
    assert not is_locked(tmp_path / "r")
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r"):  # re-entrant in one process
        assert lock_path(tmp_path / "r").exists()


def test_resume_refuses_a_directory_that_another_process_runs(tmp_path, monkeypatch, capsys):
    from geomlens.cli import main

    toy_env(monkeypatch)
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "r", started, release))
    holder.start()
    try:
        assert started.wait(30)
        assert main(["toy", "--resume", "--out", str(tmp_path / "r")]) == 2
        assert "another process" in capsys.readouterr().err
        assert not (tmp_path / "r").exists()
    finally:
        release.set()
        holder.join(30)

