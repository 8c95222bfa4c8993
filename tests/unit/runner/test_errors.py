"""One error path for every command: a user error is one line on stderr with exit code 2 and
leaves no run directory (checked up front), an internal error is one line with exit code 1 and
a --debug hint, and --debug / GEOMLENS_DEBUG show the traceback. Failure *modes* are covered
generically: every numeric field of every run command, every device-taking command, every
kind of unusable path."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
from pathlib import Path

import pytest
from helpers import ToyConfig

from geomlens.cli import COMMANDS, main
from geomlens.config.build import type_hints
from geomlens.config.flags import flag_name
from geomlens.runner.command import Command

RUN_COMMANDS = sorted(name for name in COMMANDS.names() if isinstance(COMMANDS[name], Command)
                      and name not in ("toy", "lifecycle_test"))
#: the cheapest complete command line of each run command (its required flags)
REQUIRED = {"train": ["--steps", "1"], "align": ["--model-b", "smollm2-135m"],
            "stitch": ["--model-b", "smollm2-135m"]}


def _one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message on stderr"
    last = err[-1]
    assert "Traceback" not in "\n".join(err)
    assert "usage:" not in "\n".join(err)
    assert "error" in last
    return last


def _numeric_fields(cls) -> list[tuple[str, type]]:
    out = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = str(hints.get(f.name))
        if f.init and f.metadata.get("cli") is not False and "list" not in tp and "dict" not in tp:
            if "float" in tp:
                out.append((f.name, float))
            elif "int" in tp and "bool" not in tp:
                out.append((f.name, int))
    return out


CASES = [(cmd, name, value) for cmd in RUN_COMMANDS
         for name, kind in _numeric_fields(COMMANDS[cmd].config_cls)
         for value in (("nan", "inf", "-inf", "-1") if kind is float else
                       ("-1", "99999999999999999999999"))]


@pytest.mark.parametrize("command,field,value", CASES)
def test_every_numeric_flag_rejects_nan_inf_negative_and_huge(command, field, value, tmp_path, capsys):
    out = tmp_path / "run"
    args = [command, *REQUIRED.get(command, []), f"{flag_name(field)}={value}", "--out", str(out)]
    assert main(args) == 2
    line = _one_line_error(capsys)
    assert flag_name(field) in line
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [*RUN_COMMANDS, "smoke"])
@pytest.mark.parametrize("device", ["tpu", "xla", "cuda:7", "nonsense:0"])
def test_bad_or_absent_devices(command, device, tmp_path, capsys):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    cfg = COMMANDS[command].config_cls if isinstance(COMMANDS[command], Command) else None
    if cfg is not None and "device" not in {f.name for f in dataclasses.fields(cfg)}:
        pytest.skip("no device flag")
    extra = [] if command == "smoke" else ["--out", str(tmp_path / "run")]
    assert main([command, *REQUIRED.get(command, []), "--device", device, *extra]) == 2
    line = _one_line_error(capsys)
    assert "--device cpu" in line or "cpu, cuda" in line
    assert not (tmp_path / "run").exists()


def _out_cases(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("mine")
    return {"existing file": str(tmp_path / "file"), "under a file": str(tmp_path / "file" / "x"),
            "empty": "", "root": "/", "blank": "  "}


@pytest.mark.parametrize("case", ["existing file", "under a file", "empty", "root", "blank"])
def test_unusable_out_paths(case, tmp_path, capsys):
    out = _out_cases(tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    assert main(["train", "--steps", "1", "--out", out]) == 2
    _one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "file").read_text() == "mine"


def test_read_only_out(tmp_path, capsys, monkeypatch):
    """A read-only place (here: os.access says so, as on a read-only mount) is refused up front."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "not writable" in _one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def _texts(tmp_path: Path, case: str) -> Path:
    p = tmp_path / "in"
    if case == "directory":
        p.mkdir()
    elif case == "fifo":
        os.mkfifo(p)
    elif case == "not gzip":
        p = tmp_path / "in.txt.gz"
        p.write_text("plain text, not gzip\n")
    elif case == "truncated gzip":
        p = tmp_path / "in.txt.gz"
        p.write_bytes(gzip.compress(b"some text here\n" * 50)[:30])
    elif case == "lone surrogate":
        p = tmp_path / "in.jsonl"
        p.write_text('{"text": "fine text"}\n{"text": "bad \\ud800 text"}\n')
    elif case == "surrogate id":
        p = tmp_path / "in.jsonl"
        p.write_text('{"text": "fine text", "id": "\\udfff"}\n')
    elif case == "one token":
        p = tmp_path / "in.jsonl"
        p.write_text('{"text": "The cat sat on the mat."}\n{"text": "a"}\n')
    elif case == "not utf8":
        p = tmp_path / "in.txt"
        p.write_bytes("caf\xe9\n".encode("latin-1"))
    elif case == "empty":
        p = tmp_path / "in.txt"
        p.write_text("")
    return p


TEXT_CASES = {"directory": "directory", "fifo": "not a regular file", "not gzip": "not a complete gzip",
              "truncated gzip": "not a complete gzip", "lone surrogate": "line 2",
              "surrogate id": "surrogate", "one token": "single token", "not utf8": "UTF-8",
              "empty": "No text"}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
@pytest.mark.parametrize("command", ["analyze", "kv", "smoke"])
def test_bad_texts(case, command, tmp_path, capsys):
    texts = _texts(tmp_path, case)
    out = ["--out", str(tmp_path / "run")] if command != "smoke" else []
    assert main([command, "--texts", str(texts), *out]) == 2  # a FIFO must not hang
    assert TEXT_CASES[case] in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["empty files", "corrupt weights", "foreign json", "not json"])
def test_bad_model_directories(case, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    files = {"empty files": (b"", b""), "corrupt weights": (b"{}", os.urandom(256)),
             "foreign json": (json.dumps({"hello": 1}).encode(), b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
             "not json": (b"\x80\x81garbage", b"")}[case]
    (model / "model.json").write_bytes(files[0])
    (model / "model.safetensors").write_bytes(files[1])
    assert main(["analyze", "--model", str(model), "--n-segments", "1", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys)


def test_seed_beyond_every_generator(tmp_path, capsys):
    assert main(["train", "--steps", "1", "--seed", str(2**64), "--out", str(tmp_path / "r")]) == 2
    assert "--seed" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args", [
    ["train", "--steps"], ["train", "--steps", "x"], ["train", "--head", "nosuch", "--steps", "1"],
    ["analyze", "--domains"], ["nosuchcommand"], ["report"], ["run"], ["train", "--bogus", "1"],
    ["run", "c.yaml", "--jobs", "two"], ["report", "d", "--interval", "wild"],
])
def test_argparse_errors_are_one_line(args, capsys):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "usage" not in err[0]


YAMLS = {
    "invalid yaml": "experiment: [train\n",
    "a list": "- 1\n- 2\n",
    "unknown key": "experiment: train\nout: {out}\nconfig:\n  stepz: 3\n",
    "wrong type": "experiment: train\nout: {out}\nconfig:\n  steps: many\n",
    "nan": "experiment: train\nout: {out}\nconfig:\n  steps: 1\n  lr: .nan\n",
    "inf in a sweep": "experiment: train\nout: {out}\nconfig:\n  steps: 1\nsweep:\n  lr: [0.1, .inf]\n",
    "unknown model": "experiment: analyze\nout: {out}\nconfig:\n  model: nosuch\n",
    "not utf8": b"experiment: train\n# caf\xe9\n",
}


@pytest.mark.parametrize("case", sorted(YAMLS))
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_experiment_files(case, jobs, tmp_path, capsys):
    text = YAMLS[case]
    path = tmp_path / "x.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.format(out=tmp_path / "runs"))
    assert main(["run", str(path), "--jobs", jobs]) == 2
    _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_overrides_are_accepted_after_flags(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text(f"experiment: train\nout: {tmp_path / 'a'}\nconfig:\n  steps: 1\n")
    assert main(["run", str(path), "--dry-run", f"out={tmp_path / 'b'}", "seed=3"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "b") in printed and '"seed": 3' in printed
    with pytest.raises(SystemExit, match="2"):
        main(["run", str(path), "--dry-run", "--nonsense"])
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _boom(cfg, run_dir):
    raise ZeroDivisionError("a bug")


BOOM = Command("boom_test", ToyConfig, _boom, help="test-only: a bug")


def test_internal_errors_are_one_line_with_a_debug_hint(tmp_path, capsys, monkeypatch):
    from geomlens.runner.command import register

    register(BOOM)
    assert main(["boom_test", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroDivisionError: a bug" in err[0] and "--debug" in err[0]
    assert "marked failed" in err[0] and "a bug" in (tmp_path / "r" / "failed").read_text()
    with pytest.raises(ZeroDivisionError):
        main(["boom_test", "--debug", "--out", str(tmp_path / "r2")])
    monkeypatch.setenv("GEOMLENS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["boom_test", "--out", str(tmp_path / "r3")])


def test_out_of_memory_is_a_user_error(tmp_path, capsys):
    from geomlens.runner.errors import explain

    message, code = explain(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: "
                                         "you tried to allocate 99999999 bytes."))
    assert code == 2 and "out of memory" in message and "--batch-size" in message
    assert explain(MemoryError())[1] == 2


def test_train_sizes_against_model_tokenizer_and_memory(tmp_path, capsys):
    for flags, words in ((["--seq-len", "100000"], "context"), (["--seq-len", "257"], "context"),
                         (["--vocab-size", "10000000"], "tokenizer"),
                         (["--batch-size", "1000000", "--seq-len", "256"], "memory")):
        assert main(["train", "--steps", "1", *flags, "--out", str(tmp_path / "r")]) == 2
        assert words in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()
    assert math.isfinite(1.0)
