import json

import pytest

from geomlens.rundir import RunDirError, create_run_dir, is_done, mark_done, to_jsonable


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
