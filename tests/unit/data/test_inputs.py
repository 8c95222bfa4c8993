"""Text in: one helper turns a text, a list of texts or token ids into token sequences."""

import logging

import pytest
import torch
from helpers import CharTokenizer, text_model

from geomlens.data.inputs import as_batch, as_sequences
from geomlens.errors import InputError


def ids(text):
    return CharTokenizer()(text)["input_ids"]


def test_every_input_form_gives_the_same_tokens():
    model = text_model()
    one = as_sequences(model, "abc")
    assert [s.tolist() for s in one] == [ids("abc")]
    assert [s.tolist() for s in as_sequences(model, ["abc", "de"])] == [ids("abc"), ids("de")]
    assert [s.tolist() for s in as_sequences(model, torch.tensor(ids("abc")))] == [ids("abc")]
    assert [s.tolist() for s in as_sequences(model, ids("abc"))] == [ids("abc")]
    two = as_sequences(model, torch.tensor([ids("abc"), ids("xyz")]))
    assert [s.tolist() for s in two] == [ids("abc"), ids("xyz")]
    ragged = as_sequences(model, [torch.tensor(ids("abc")), torch.tensor(ids("de"))])
    assert [s.tolist() for s in ragged] == [ids("abc"), ids("de")]


def test_a_model_with_a_tokenizer_uses_to_tokens(monkeypatch):
    model = text_model()
    model.tokenizer = object()
    monkeypatch.setattr(model, "to_tokens", lambda t: torch.tensor([[1, *ids(t)]]), raising=False)
    assert as_sequences(model, "ab")[0].tolist() == [1, *ids("ab")]


def test_batch_is_right_padded_with_lengths():
    tokens, lengths = as_batch(text_model(), ["abcd", "xy"])
    assert lengths.tolist() == [4, 2]
    assert tokens.tolist() == [ids("abcd"), ids("xy") + [0, 0]]


def test_nothing_is_cut_silently(caplog):
    model = text_model()  # n_ctx of the tiny model
    n_ctx = model.cfg.n_ctx
    with pytest.raises(InputError, match="context"):
        as_sequences(model, "a" * (n_ctx + 1))
    with caplog.at_level(logging.WARNING):
        out = as_sequences(model, ["abcdef", "ab"], max_tokens=3)
    assert [len(s) for s in out] == [3, 2]
    assert len(caplog.records) == 1 and "1 of 2" in caplog.records[0].getMessage()


@pytest.mark.parametrize("bad", ["", "   ", [], ["a", ""], 3.5, torch.zeros(1, 1, 1, dtype=torch.long)])
def test_bad_input_is_one_line_error(bad):
    with pytest.raises(InputError) as err:
        as_sequences(text_model(), bad, where="f")
    assert str(err.value).startswith("f:") and "\n" not in str(err.value)
