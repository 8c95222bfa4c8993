"""`load_model_segments`: corpus text in the model's own token ids (training runs with a reduced
vocabulary map every token outside it to their OOV id, as the trainer did)."""

import json

import pytest
import torch
from helpers import build_model

from geomlens.data.source import TextSource, load_model_segments, load_segments
from geomlens.data.token_map import ATTRIBUTE, TokenMap
from geomlens.errors import InputError


class CharTokenizer:
    """One id per character (3 + ord % 47), no BOS added."""

    bos_token_id = None
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(c) % 47 for c in text]}


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [{"id": "a", "text": "hello world"}, {"id": "b", "text": "zebra quiz"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TextSource(texts=str(path), max_tokens=32)


def test_reduced_vocabulary_maps_through_the_kept_table(source):
    model = build_model(d_vocab=12)
    kept = torch.tensor([3 + ord(c) % 47 for c in "helo wrd"])  # 8 kept tokens, OOV id 11
    setattr(model, ATTRIBUTE, TokenMap(tokenizer=CharTokenizer(), d_vocab=12, kept=kept, oov_id=11))
    seqs, ids, _ = load_model_segments(source, model)
    originals, _, _ = load_segments(source, CharTokenizer())
    assert ids == ["a", "b"]
    for seq, orig in zip(seqs, originals):
        expected = [kept.tolist().index(t) if t in kept.tolist() else 11 for t in orig.tolist()]
        assert seq.tolist() == expected and int(seq.max()) < model.cfg.d_vocab
    assert seqs[0].tolist()[:5] == [0, 1, 2, 2, 3]  # "hello": h e l l o


def test_full_vocabulary_model_keeps_the_tokenizer_ids(source):
    model = build_model(d_vocab=50)
    model.tokenizer = CharTokenizer()
    seqs, _, _ = load_model_segments(source, model)
    originals, _, _ = load_segments(source, CharTokenizer())
    assert all(torch.equal(a, b) for a, b in zip(seqs, originals))


def test_model_without_tokenizer_is_a_one_line_error(source):
    model = build_model(d_vocab=50)
    model.tokenizer = None
    with pytest.raises(InputError, match="no tokenizer"):
        load_model_segments(source, model)
