"""`config_and_segments`: the one place a notebook call's config and segments are resolved."""

import json

import pytest
from helpers import CharTokenizer, text_model

from geomlens.ablation import AblateConfig
from geomlens.data.request import config_and_segments
from geomlens.errors import ConfigError


def ids(text):
    return CharTokenizer()(text)["input_ids"]


def test_texts_as_argument_or_keyword_are_one_segment_each():
    model = text_model()
    for call in ({"cfg": ["abc", "de"]}, {"texts": ["abc", "de"]}):
        cfg, seqs, seg_ids, domains = config_and_segments(model, AblateConfig, where="f", **call)
        assert [s.tolist() for s in seqs] == [ids("abc"), ids("de")]
        assert seg_ids == ["0", "1"] and domains == ["text", "text"] and cfg == AblateConfig()


def test_overrides_are_validated_and_max_tokens_cuts_only_when_given():
    model = text_model()
    cfg, seqs, _, _ = config_and_segments(model, AblateConfig, None, "abcdef", where="f", k=3)
    assert cfg.k == 3 and len(seqs[0]) == 6  # the default max_tokens (64) cuts nothing
    _, seqs, _, _ = config_and_segments(model, AblateConfig, None, "abcdef", where="f", max_tokens=4)
    assert len(seqs[0]) == 4
    with pytest.raises(ConfigError, match="--k must be >= 1"):
        config_and_segments(model, AblateConfig, None, "abc", where="f", k=0)
    with pytest.raises(TypeError, match="once"):
        config_and_segments(model, AblateConfig, ["a"], ["b"], where="f")


def test_a_file_is_the_configs_text_source(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n" for t, d in
                            (("abc", "x"), ("defg", "y"))))
    cfg, seqs, seg_ids, domains = config_and_segments(text_model(), AblateConfig, AblateConfig(k=5), path,
                                                      where="f")
    assert cfg.texts == str(path) and cfg.k == 5
    assert [s.tolist() for s in seqs] == [ids("abc"), ids("defg")] and domains == ["x", "y"]
    assert len(seg_ids) == 2
