"""Run directories: provenance, atomic claims (two processes never share one), foreign files
never written, atomic writes, and a failed marker even on a full disk."""

import errno
import json
import multiprocessing
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import ToyConfig

from geomlens.cli import main
from geomlens.rundir import (
    CLAIM,
    FAILED,
    RunDirError,
    atomic_write,
    check_out_path,
    create_run_dir,
    failure,
    is_done,
    is_run_dir,
    mark_done,
    mark_failed,
    to_jsonable,
)
from geomlens.runner.command import Command, register


def test_run_dir_writes_provenance(tmp_path):
    out = create_run_dir(tmp_path / "r", config={"a": 1, "b": [1, 2]}, seed=7, device="cpu")
    assert json.loads((out / "config.json").read_text()) == {"a": 1, "b": [1, 2]}
    env = json.loads((out / "env.json").read_text())
    assert env["seed"] == 7 and env["device"] == "cpu"
    assert {"git_hash", "packages", "python", "platform"} <= set(env)
    assert env["packages"]["torch"] is not None


def test_never_overwrites_silently(tmp_path):
    first = create_run_dir(tmp_path / "r", config={"a": 1}, seed=0)
    (first / "result.txt").write_text("precious")
    second = create_run_dir(tmp_path / "r", config={"a": 2}, seed=0)
    assert second != first and second.name == "r-2"
    assert (first / "result.txt").read_text() == "precious"
    assert json.loads((first / "config.json").read_text()) == {"a": 1}
    with pytest.raises(RunDirError, match="already holds a run"):
        create_run_dir(tmp_path / "r", config={"a": 1}, seed=0, mode="error")


def test_resume_requires_same_config(tmp_path):
    out = create_run_dir(tmp_path / "r", config={"a": 1}, seed=0)
    assert create_run_dir(out, config={"a": 1}, seed=0, mode="resume") == out
    env = json.loads((out / "env.json").read_text())
    assert len(env["history"]) == 1
    with pytest.raises(RunDirError, match="differs"):
        create_run_dir(out, config={"a": 3}, seed=0, mode="resume")


def test_done_marker(tmp_path):
    assert not is_done(tmp_path)
    mark_done(tmp_path)
    assert is_done(tmp_path)


def test_to_jsonable_handles_tensors_and_dataclasses():
    from dataclasses import dataclass

    import torch

    @dataclass
    class C:
        x: int = 1

    assert to_jsonable({"t": torch.tensor(2.5), "c": C(), "d": torch.float32}) == {
        "t": 2.5, "c": {"x": 1}, "d": "torch.float32"
    }


# -- run directories that cannot collide --------------------------------------------------------
def _claim_many(args):
    root, barrier, trials = args
    got = []
    for t in range(trials):
        barrier.wait()
        got.append(str(create_run_dir(Path(root) / f"t{t}" / "same", config={"t": t}, seed=0)))
    return got


def test_concurrent_processes_never_get_the_same_directory(tmp_path):
    """4 processes x 25 trials, released together by a barrier: every directory is unique."""
    ctx = multiprocessing.get_context("fork")
    n, trials = 4, 25
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.map(_claim_many, [(str(tmp_path), barrier, trials)] * n)
    dirs = [d for r in results for d in r]
    assert len(dirs) == len(set(dirs)) == n * trials
    for t in range(trials):
        names = sorted(p.name for p in (tmp_path / f"t{t}").iterdir() if not p.name.startswith("."))
        assert names == ["same", "same-2", "same-3", "same-4"]


@pytest.mark.parametrize("mode", ["new", "resume", "error"])
def test_a_directory_of_foreign_files_is_never_written(tmp_path, mode):
    d = tmp_path / "d"
    d.mkdir()
    (d / "metrics.csv").write_text("mine")
    (d / "summary.json").write_text('{"mine": 1}')
    if mode == "new":
        used = create_run_dir(d, config={"a": 1}, seed=0, mode=mode)
        assert used.name == "d-2"
    else:
        with pytest.raises(RunDirError, match="did not write|already holds"):
            create_run_dir(d, config={"a": 1}, seed=0, mode=mode)
    assert sorted(os.listdir(d)) == ["metrics.csv", "summary.json"]
    assert (d / "summary.json").read_text() == '{"mine": 1}' and not is_run_dir(d)


def test_an_empty_existing_directory_is_claimed_once(tmp_path):
    (tmp_path / "e").mkdir()
    first = create_run_dir(tmp_path / "e", config={}, seed=0)
    second = create_run_dir(tmp_path / "e", config={}, seed=0)
    assert first.name == "e" and second.name == "e-2" and (first / CLAIM).exists()


def test_resume_refuses_a_different_or_unreadable_config(tmp_path):
    out = create_run_dir(tmp_path / "r", config={"a": 1}, seed=0)
    with pytest.raises(RunDirError, match="differs"):
        create_run_dir(out, config={"a": 2}, seed=0, mode="resume")
    (out / "config.json").write_text("{broken")
    with pytest.raises(RunDirError, match="unreadable"):
        create_run_dir(out, config={"a": 1}, seed=0, mode="resume")


@pytest.mark.parametrize("bad", ["", " ", "/", "file", "file/under"])
def test_unusable_out_paths_are_refused_before_anything_is_written(tmp_path, bad):
    (tmp_path / "file").write_text("x")
    target = bad if bad in ("", " ", "/") else str(tmp_path / bad)
    with pytest.raises(RunDirError):
        check_out_path(target)
    with pytest.raises(RunDirError):
        create_run_dir(target, config={}, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_atomic_write_uses_unique_temporary_names(tmp_path, monkeypatch):
    names = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (names.append(os.path.basename(a)), real(a, b)))
    for _ in range(3):
        atomic_write(tmp_path / "summary.json", "{}")
    assert len(set(names)) == 3 and all(n.endswith(".tmp") for n in names)
    assert os.listdir(tmp_path) == ["summary.json"]


def test_env_records_version_threads_and_no_foreign_git_hash(tmp_path):
    import torch

    out = create_run_dir(tmp_path / "r", config={}, seed=0)
    env = json.loads((out / "env.json").read_text())
    assert env["geomlens_version"] and env["torch_threads"] == torch.get_num_threads()
    assert "omp_num_threads" in env


def test_git_hash_only_for_the_package_checkout(monkeypatch):
    """An installed copy inside some other repository records no hash of that repository."""
    from geomlens import rundir

    def fake_run(cmd, **kw):
        out = "/some/other/repo\nabc123\n" if "rev-parse" in cmd else ""
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(rundir.subprocess, "run", fake_run)
    assert rundir.git_info() == {"git_hash": None, "git_dirty": None}


# -- full disks -----------------------------------------------------------------------------------
def test_failed_marker_is_written_into_reserved_space_when_the_disk_is_full(tmp_path, monkeypatch):
    out = create_run_dir(tmp_path / "r", config={}, seed=0)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("geomlens.rundir.tempfile.mkstemp", full)
    mark_failed(out, OSError(errno.ENOSPC, "No space left on device", str(out / "big.bin")))
    assert "disk is full" in failure(out) and not (out / CLAIM).exists()
    assert (out / FAILED).read_text().count("\n") == 2


@contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(cfg, run_dir):
    with open(run_dir / "big.bin", "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


FILL = Command("fill_test", ToyConfig, _fill, help="test-only: fills the disk")


def test_a_real_full_disk_gives_one_line_and_a_failed_marker(tmp_path, capsys):
    register(FILL)
    with _tmpfs(tmp_path / "disk", "size=512k") as disk:
        assert main(["fill_test", "--out", str(disk / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "disk is full" in err[0] and "marked failed" in err[0]
        assert "disk is full" in failure(disk / "r") and not (disk / "r" / "done").exists()


def test_a_read_only_file_system_is_refused_up_front(tmp_path, capsys):
    with _tmpfs(tmp_path / "ro", "size=64k,ro") as ro:
        assert main(["train", "--steps", "1", "--out", str(ro / "r")]) == 2
        assert "not writable" in capsys.readouterr().err
        assert os.listdir(ro) == []
