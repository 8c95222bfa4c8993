import json

import pytest
import torch

from geomlens.data import DOMAINS, batch_sequences, load_corpus, token_stream, tokenize_segments
from geomlens.errors import InputError


class CharTokenizer:
    """A stand-in tokenizer: one id per character (ord % 50), optional BOS = 1, EOS = 2."""

    bos_token_id = 1
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 47 for c in text]}


def test_bundled_eval_corpus_is_complete():
    ds = load_corpus()
    assert len(ds) == 5 * 300
    assert set(ds["domain"]) == set(DOMAINS)
    assert all(t.strip() for t in ds["text"])


def test_domain_filters_and_n_segments():
    ds = load_corpus("news,fiction", n_segments=3)
    assert ds["domain"] == ["news"] * 3 + ["fiction"] * 3
    with pytest.raises(InputError, match="Unknown domain"):
        load_corpus("poetry")


def test_train_split_is_disjoint_from_eval():
    train = load_corpus(split="train_cpu")
    assert len(train) > 1000
    eval_texts = set(load_corpus()["text"])
    sample = train["text"][:200]
    assert not any(t in eval_texts for t in sample)


def test_local_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"text": "hello there"}) + "\n" + json.dumps({"text": "bye"}) + "\n")
    ds = load_corpus(path=p)
    assert ds["text"] == ["hello there", "bye"] and ds["domain"] == ["x", "x"]
    t = tmp_path / "doc.txt"
    t.write_text("first doc\n\nsecond doc\n")
    assert load_corpus(path=t)["text"] == ["first doc", "second doc"]
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(path=tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="No text"):
        load_corpus(path=empty)


def test_tokenize_truncate_and_window():
    tok = CharTokenizer()
    text = "abcdefghij"  # 10 tokens
    (t,) = tokenize_segments(tok, [text], max_tokens=4)
    assert t.tolist() == tok(text)["input_ids"][:4]
    windows = tokenize_segments(tok, [text], max_tokens=4, overflow="window")
    assert [len(w) for w in windows] == [4, 4, 2]
    assert torch.cat(windows).tolist() == tok(text)["input_ids"]
    (b,) = tokenize_segments(tok, ["ab"], max_tokens=8, prepend_bos=True)
    assert b[0].item() == 1


def test_empty_text_is_a_clear_error():
    with pytest.raises(InputError, match="empty"):
        tokenize_segments(CharTokenizer(), ["ok", "   "], max_tokens=8)


def test_batching_pads_right_and_reports_lengths():
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8])]
    (tokens, lengths), = list(batch_sequences(seqs, batch_size=4, pad_id=0))
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]


def test_token_stream_separates_documents_with_eos():
    s = token_stream(CharTokenizer(), ["ab", "c"])
    assert s.tolist().count(2) == 2 and len(s) == 5


def test_batching_ragged_lengths_pass_runtime_type_checks():
    seqs = [torch.arange(5), torch.arange(2), torch.arange(7)]
    batches = list(batch_sequences(seqs, batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 5), (1, 7)]
