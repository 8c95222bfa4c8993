"""`nearest_vs_probable` on a tiny model with a plain unembedding: text in equals token ids in,
and the table equals torch.cdist / softmax computed directly."""

from __future__ import annotations

import pytest
import torch
from helpers import CharTokenizer, text_model

from geomlens.errors import InputError
from geomlens.geometry.nearest import COLUMNS, nearest_vs_probable

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    m = text_model()
    assert m.cfg.d_vocab == 50 and m.cfg.n_layers == 2
    return m


def test_table_equals_cdist_and_softmax(model):
    text = "the cat sat"
    ids = torch.tensor(CharTokenizer()(text)["input_ids"])
    table = nearest_vs_probable(model, text, pos=-2, n=6)
    assert tuple(table.columns) == COLUMNS and len(table) == 6
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids[None])
        h = model.ln_final(cache["blocks.1.hook_resid_post"])[0, -2]  # what unembed reads
    d = torch.cdist(h[None].double(), model.W_E.detach().double())[0]
    p = torch.softmax(logits[0, -2].double(), dim=-1)
    near, top = d.argsort()[:6], p.argsort(descending=True)[:6]
    assert table["nearest_token_id"].tolist() == near.tolist()
    assert table["distance"].to_numpy() == pytest.approx(d[near].numpy(), rel=1e-5)
    assert table["probable_token_id"].tolist() == top.tolist()
    assert table["p"].to_numpy() == pytest.approx(p[top].numpy(), rel=1e-5)
    assert table["nearest_token"].tolist() == [chr(i) for i in near.tolist()]
    assert table.equals(nearest_vs_probable(model, ids, pos=-2, n=6))  # text in = ids in


def test_one_line_errors(model):
    with pytest.raises(InputError, match="outside the context's 3 tokens"):
        nearest_vs_probable(model, "abc", pos=3)
    with pytest.raises(InputError, match="one context, not 2"):
        nearest_vs_probable(model, ["ab", "cd"])
    with pytest.raises(InputError, match="empty"):
        nearest_vs_probable(model, "  ")
