"""The converted-weights cache: several processes converting one model (the ranks of a torchrun
launch on one node) leave one complete cache and no temporary directories."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from geomlens.models.cache import model_cache_dir, save_to_cache


class _Tokenizer:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def save_pretrained(self, path: str) -> None:
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "tag.txt").write_text(self.tag)


def test_a_complete_cache_is_kept_and_a_half_written_one_replaced(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("GEOMLENS_CACHE", str(tmp_path))
    path = model_cache_dir("tiny")
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")  # a crash left it without weights
    assert save_to_cache(tiny_model, "tiny", _Tokenizer("first")) == path
    assert (path / "tokenizer" / "tag.txt").read_text() == "first"
    # a second process that converted the same model meanwhile: the first copy stays
    first = tiny_model.embed.W_E.detach().clone()
    with torch.no_grad():
        tiny_model.embed.W_E.add_(1.0)
    assert save_to_cache(tiny_model, "tiny", _Tokenizer("second")) == path
    assert (path / "tokenizer" / "tag.txt").read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .tmp-PID left
    assert torch.equal(load_file(str(path / "model.safetensors"))["embed.W_E"], first)
