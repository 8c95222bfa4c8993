"""Bad input: a one-line error (exit 2, no traceback) and no run directory left behind; and
every `--flag` an error message names exists."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import geomlens
from geomlens.cli import COMMANDS, build_parser, main

ANALYZE = ["analyze", "--n-segments", "1", "--max-tokens", "8", "--no-controls"]


def _fails_cleanly(args: list[str], out: Path, capsys, *expected: str) -> str:
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    assert not out.exists()
    return err


def test_not_utf8_names_the_file_and_the_byte_offset(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    _fails_cleanly([*ANALYZE, "--texts", str(bad)], tmp_path / "run", capsys,
                   str(bad), "not UTF-8", "offset 3")


def test_malformed_jsonl_names_the_file_line_and_key(tmp_path, capsys):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken\n')
    _fails_cleanly([*ANALYZE, "--texts", str(bad)], tmp_path / "run", capsys,
                   f"{bad}, line 2", "malformed JSON", '"text"')


def test_jsonl_record_without_text(tmp_path, capsys):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"body": "no text key"}\n')
    _fails_cleanly(["ablate", "--texts", str(bad)], tmp_path / "run", capsys,
                   f"{bad}, line 3", "no 'text' key")


def test_empty_segment(tmp_path, capsys):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": "   "}\n')
    _fails_cleanly([*ANALYZE, "--texts", str(bad)], tmp_path / "run", capsys, "empty")


def test_missing_text_file(tmp_path, capsys):
    _fails_cleanly([*ANALYZE, "--texts", str(tmp_path / "nope.jsonl")], tmp_path / "run", capsys,
                   "no such file")


def test_unknown_model_layer_score_and_length(tmp_path, capsys):
    _fails_cleanly(["analyze", "--model", "nosuch"], tmp_path / "a", capsys, "Unknown model 'nosuch'")
    _fails_cleanly(["ablate", "--layers", "99"], tmp_path / "b", capsys, "--layers", "[99]", "30 layers")
    _fails_cleanly(["analyze", "--scores", "neg_dst"], tmp_path / "c", capsys, "Did you mean 'neg_dist'")
    _fails_cleanly(["analyze", "--max-tokens", "100000"], tmp_path / "d", capsys, "--max-tokens 100000")
    _fails_cleanly(["analyze", "--domains", "poetry"], tmp_path / "e", capsys, "poetry")


def test_no_cuda_is_a_clean_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fails_cleanly([*ANALYZE, "--device", "cuda"], tmp_path / "run", capsys, "no CUDA GPU")


def _all_flags() -> set[str]:
    flags = set()
    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        flags |= {s for a in sub.choices[name]._actions for s in a.option_strings}
    return flags


def _error_strings() -> list[tuple[str, str]]:
    """(file:line, text) of every string literal inside a `raise` in the package."""
    out = []
    for path in Path(geomlens.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.append((f"{path.name}:{node.lineno}", sub.value))
    return out


def test_every_flag_named_in_an_error_exists():
    flags = _all_flags()
    named = [(where, f) for where, text in _error_strings()
             for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)]
    assert len(named) >= 10  # the scan does see the messages
    pip_flags = {"--no-deps"}  # inside pip commands, not geomlens flags
    missing = [(where, f) for where, f in named if f not in flags and f not in pip_flags]
    assert not missing, missing
