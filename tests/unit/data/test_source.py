"""Text sources: a --texts file is read whole unless --n-segments caps it (and a cap or a cut
says so in one warning line); one --n-segments default for every command."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from helpers import build_model

from geomlens.cli import COMMANDS
from geomlens.data.source import BUNDLED_SEGMENTS, TextSource, load_segments, read_rows
from geomlens.kv.command import run_kv
from geomlens.kv.config import KVConfig
from geomlens.runner.command import Command


class CharTokenizer:
    """One id per character (3 + ord % 47), no BOS added."""

    bos_token_id = None
    eos_token_id = 2
    padding_side = "right"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 47 for c in text]}


@pytest.fixture()
def twenty(tmp_path):
    path = tmp_path / "my20.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "text": f"segment number {i} says hi"})
                            + "\n" for i in range(20)))
    return str(path)


def test_a_texts_file_is_read_whole_by_default(twenty, caplog):
    with caplog.at_level(logging.WARNING):
        assert len(read_rows(TextSource(texts=twenty))) == 20
    assert not caplog.records


def test_a_cap_that_cuts_a_file_says_so_in_one_line(twenty, caplog):
    with caplog.at_level(logging.WARNING):
        assert len(read_rows(TextSource(texts=twenty, n_segments=8))) == 8
    [record] = caplog.records
    assert "keeps 8 of the 20 segments" in record.getMessage() and twenty in record.getMessage()


def test_cutting_a_long_segment_says_so(twenty, caplog):
    with caplog.at_level(logging.WARNING):
        seqs, _, _ = load_segments(TextSource(texts=twenty, max_tokens=10), CharTokenizer())
    assert all(len(s) == 10 for s in seqs)
    assert "20 segment(s)" in caplog.records[-1].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        seqs, _, _ = load_segments(TextSource(texts=twenty, max_tokens=10, overflow="window"),
                                   CharTokenizer())
    assert not caplog.records and sum(len(s) for s in seqs) > 200


def test_the_bundled_corpus_default_is_one_number():
    rows = read_rows(TextSource(domains=["news", "fiction"]))
    assert len(rows) == 2 * BUNDLED_SEGMENTS
    defaults = {name: {f.name: f.default for f in dataclasses.fields(cmd.config_cls)}["n_segments"]
                for name in COMMANDS.names()
                if isinstance(cmd := COMMANDS[name], Command)
                and issubclass(cmd.config_cls, TextSource)}
    assert {"analyze", "ablate", "kv"} <= set(defaults)
    assert set(defaults.values()) == {None}, defaults


def test_kv_evaluates_every_segment_of_a_texts_file(twenty, tmp_path):
    model = build_model(d_vocab=50, n_ctx=64)
    model.tokenizer = CharTokenizer()
    torch.manual_seed(0)
    cfg = KVConfig(texts=twenty, max_tokens=32, n_bootstrap=50)
    summary = run_kv(cfg, tmp_path, model=model)
    assert summary["n_segments"] == 20
