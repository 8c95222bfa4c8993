"""Ctrl-C and SIGTERM (what a cluster scheduler sends) mark the run failed ("interrupted") and
exit 130 / 143 with one line and no traceback, for a single command and for `geomlens run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLEEP_ENV, toy_env, write_configs

from geomlens.rundir import failure, is_done


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A harness started in the
    background of a non-interactive shell (``cmd &``) ignores SIGINT, every child inherits that,
    and Python then installs no KeyboardInterrupt handler: Ctrl-C is what is tested here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, **{SLEEP_ENV: "0.2"})
    return subprocess.Popen([sys.executable, "-m", "geomlens", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run never started"
        time.sleep(0.1)


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"),
                                           (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_marks_the_run_failed_and_exits_without_a_traceback(tmp_path, monkeypatch, sig, code, name):
    toy_env(monkeypatch)
    out = tmp_path / "r"
    proc = _start(["toy", "--n", "10000", "--out", str(out)], tmp_path)
    _wait_for(out / "starts.txt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    lines = [line for line in err.strip().splitlines() if not line.startswith("INFO")]
    assert "Traceback" not in err and len(lines) == 1 and "interrupted" in lines[0]
    assert failure(out).startswith("interrupted") and name in failure(out)
    assert not is_done(out)


def test_sigterm_stops_a_sweep_and_marks_the_running_point(tmp_path, monkeypatch):
    toy_env(monkeypatch)
    config = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    proc = _start(["run", str(config), "n=10000"], tmp_path)
    point = tmp_path / "runs" / "seed=0"
    _wait_for(point / "starts.txt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    assert failure(point) == "interrupted (SIGTERM)"
    assert not (tmp_path / "runs" / "seed=1").exists()


def test_sigterm_to_a_parallel_sweep_stops_and_marks_every_running_point(tmp_path, monkeypatch):
    toy_env(monkeypatch)
    config = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n")
    proc = _start(["run", str(config), "n=10000", "--jobs", "2"], tmp_path)
    points = [tmp_path / "runs" / f"seed={s}" for s in (0, 1)]
    for point in points:
        _wait_for(point / "starts.txt", proc, timeout=240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err
    assert [failure(p) for p in points] == ["interrupted (SIGTERM)"] * 2
