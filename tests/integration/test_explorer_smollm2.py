"""The explorer on smollm2-135m: text in, the last row of the logit lens is the model's own
prediction, the payload stays small, and the messages recompute."""

import numpy as np
import pytest
import torch

from geomlens.explorer import payload
from geomlens.explorer.view import Explorer

pytestmark = pytest.mark.integration

TEXT = "The capital of France is Paris, and the river that runs through it is the"


def test_explorer_smollm2(smollm2):
    ex = Explorer(smollm2, TEXT)
    toks = smollm2.to_tokens(TEXT)[0]
    with torch.no_grad():
        logits = smollm2(toks[None])[0]
    g = ex.grids[0]
    assert g.top_ids.shape == (30, len(toks), 4, 10)
    assert np.array_equal(g.top_ids[-1, :, 0, 0], logits.argmax(-1).numpy())
    df = ex.frame()
    last = df[(df.layer == 29) & (df.pos == len(toks) - 1) & (df.lens == "logit") & (df["rank"] == 0)]
    assert last.token.item() == smollm2.tokenizer.decode([int(logits[-1].argmax())])
    header, _ = payload.decode(ex.payload())
    assert header["seqs"][0]["rows"][-1] == [29, "resid_post"]
    assert len(ex.payload()) < 200_000
    movers = header["extra"][0]["movers"][f"{len(toks) - 1}:20"]["rows"]
    assert len(movers) == 5 and all(len(m["top_tokens"]) == 5 for m in movers)
    reply = ex.handle({"type": "intervene", "target": "kv_first", "layer": 1, "lens": "logit"})
    assert reply["type"] == "changed"
    assert (ex.changed[0].final_top1 != g.final_top1).any()  # layer-0 K/V everywhere changes p
