"""The Python side of the explorer: inputs, the view's messages, the payload and frame()."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import build_model

from geomlens.errors import InputError
from geomlens.explorer import payload
from geomlens.explorer.view import Explorer, as_sequences
from geomlens.kv.layer_map import LayerMap
from geomlens.kv.patch import patch_kv

TOKENS = torch.tensor([3, 17, 5, 42, 8, 8, 21, 0, 33, 12])


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture()
def ex(model):
    return Explorer(model, TOKENS)


def test_inputs(model):
    assert [len(s) for s in as_sequences(model, TOKENS)] == [10]
    assert [len(s) for s in as_sequences(model, torch.stack([TOKENS, TOKENS]))] == [10, 10]
    assert as_sequences(model, [1, 2, 3])[0].tolist() == [1, 2, 3]
    with pytest.raises(InputError, match="no tokenizer"):
        as_sequences(model, "some text")
    with pytest.raises(InputError, match="empty"):
        as_sequences(model, ["  "])
    with pytest.raises(InputError, match="nothing is cut"):
        as_sequences(model, torch.zeros(model.cfg.n_ctx + 1, dtype=torch.long))
    with pytest.raises(InputError, match="give a text"):
        as_sequences(model, 3.5)


def test_frame_matches_the_grid(ex):
    df = ex.frame()
    g = ex.grids[0]
    assert list(df.columns[:10]) == ["seq", "layer", "hook", "pos", "input_token", "lens", "rank",
                                     "token", "token_id", "value"]
    assert len(df) == g.top_ids.size
    cell = df[(df.layer == 1) & (df.pos == 4) & (df.lens == "distance_raw")].sort_values("rank")
    li = g.lenses.index("distance_raw")
    assert cell.token_id.tolist() == g.top_ids[1, 4, li].tolist()
    assert cell.token.tolist() == [str(i) for i in g.top_ids[1, 4, li]]  # no tokenizer: ids
    assert (cell.rank_final == g.rank_final[1, 4, li]).all()
    assert (cell.step_norm == g.step_norm[1, 4]).all()


def test_payload_round_trip(ex):
    header, seqs = payload.decode(ex.payload())
    g, a = ex.grids[0], seqs[0]
    vocab = np.asarray(header["vocab_ids"])
    assert np.array_equal(vocab[a["top_ids"]], g.top_ids)
    assert np.array_equal(a["rank_final"], g.rank_final) and np.array_equal(a["rank_next"], g.rank_next)
    np.testing.assert_allclose(a["top_values"].astype(np.float32), g.top_values, rtol=1e-3)
    assert header["lenses"] == list(g.lenses) and header["seqs"][0]["rows"][-1] == [1, "resid_post"]
    assert header["vocab"] == [str(i) for i in vocab]
    path = header["extra"][0]["paths"][3]
    assert len(path["points"]) == 3 and 0 < path["explained"] <= 1 + 1e-6
    movers = header["extra"][0]["movers"]["9:1"]["rows"]
    assert movers and {m["component"] for m in movers} <= {"attn", "mlp"}


def test_movers_from_the_shared_pass_equal_their_own_pass(ex, model):
    """Explorer gives the movers the grid's forward pass and ranks by push only; the movers'
    own pass (`step_attribution`, both rankings, then the push top) gives the same rows."""
    from geomlens.explorer import movement

    own = movement.movers(model, TOKENS, pos=len(TOKENS) - 1, layers=[0, 1], top=ex.movers_top)
    assert ex.movers[0] == own


def test_intervene_message_zero_attention(ex, model):
    reply = ex.handle({"type": "intervene", "target": "attn", "layer": 1, "method": "zero", "lens": "logit"})
    assert reply == {"type": "changed", "label": "zero ablation of block 1 attn"}
    (changed,) = ex.changed
    assert changed.lenses == ("logit",)
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    with torch.no_grad():
        logits = model.run_with_hooks(TOKENS[None], fwd_hooks=[("blocks.1.hook_attn_out", zero)])[0]
    assert np.array_equal(changed.final_top1, logits.argmax(-1).numpy())
    assert np.array_equal(changed.top_ids[0], ex.grids[0].top_ids[0, :, :1])  # block 0 untouched
    header, _ = payload.decode(ex.changed_payload())
    assert header["label"] == reply["label"]
    assert len(ex.frame(changed=True)) == changed.top_ids.size
    assert ex.handle({"type": "reset"}) == {"type": "changed", "label": ""} and ex.changed is None


def test_intervene_mean_and_first_layer_kv(ex, model):
    ex.intervene("mlp", 0, "mean")
    assert ex.changed[0].lenses == ex.lenses and ex.changed_label == "mean ablation of block 0 mlp"
    ex.intervene("kv_first", 1)
    with torch.no_grad(), patch_kv(model, LayerMap((0, 0)), "all"):
        logits = model(TOKENS[None])[0]
    assert np.array_equal(ex.changed[0].final_top1, logits.argmax(-1).numpy())


@pytest.mark.parametrize("msg, words", [
    ({"type": "intervene", "target": "heads", "layer": 0}, "unknown target"),
    ({"type": "intervene", "target": "attn", "layer": 7}, "outside 0..1"),
    ({"type": "intervene", "target": "kv_first", "layer": 0}, "outside 1..1"),
    ({"type": "intervene", "target": "mlp", "layer": "x"}, "integer"),
    ({"type": "intervene", "target": "mlp", "layer": 0, "method": "resample"}, "unknown method"),
    ({"type": "movers", "seq": 0, "layer": 0, "pos": 99}, "outside the grid"),
    ({"type": "movers", "seq": 4, "layer": 0, "pos": 0}, "sequence 4"),
    ({"type": "paint"}, "unknown message type"),
])
def test_bad_messages_answer_one_line(ex, msg, words):
    reply = ex.handle(msg)
    assert reply["type"] == "error" and words in reply["message"] and "\n" not in reply["message"]
    assert ex.changed is None


def test_movers_message(ex):
    reply = ex.handle({"type": "movers", "seq": 0, "layer": 1, "pos": 4})
    assert reply["type"] == "movers" and (reply["layer"], reply["pos"]) == (1, 4)
    rows = reply["data"]["rows"]
    pushes = [r["push"] for r in rows]
    assert pushes == sorted(pushes, reverse=True) and len(rows) == 5
    assert all(len(r["top_tokens"]) == 5 for r in rows)


def test_unknown_lens(model):
    with pytest.raises(InputError, match="unknown lens"):
        Explorer(model, TOKENS, lenses=("logit", "tuned"))


def test_compare(ex):
    with pytest.raises(InputError, match="intervene"):
        ex.compare()
    ex.intervene("mlp", 1, "zero")
    table = ex.compare(pos=-1, lens="logit")
    assert list(table.index) == [0, 1]
    assert table.loc[1, "token_changed"] == str(ex.changed[0].top_ids[1, -1, 0, 0])
    assert table.loc[1, "token_original"] == str(ex.grids[0].top_ids[1, -1, 0, 0])


def test_bfloat16_model(model):
    """A bf16 model's view opens: every number is read in float32 (numpy has no bfloat16)."""
    half = build_model().to(torch.bfloat16)
    frame = Explorer(half, torch.tensor([3, 17, 5, 42, 8])).frame()
    assert len(frame) and np.isfinite(frame["step_norm"]).all()
    assert frame["token"].map(type).eq(str).all()


def test_payload_keeps_values_beyond_float16(ex):
    """Distances past float16's 65,504 travel as float32 (no inf in the view)."""
    grid = ex.grids[0]
    big = dataclasses.replace(grid, top_values=grid.top_values * 1e5)
    _, seqs = payload.decode(payload.encode([big], lambda ids: [str(i) for i in ids])[0])
    assert seqs[0]["top_values"].dtype == np.float32
    assert np.isfinite(seqs[0]["top_values"]).all()
    np.testing.assert_array_equal(seqs[0]["top_values"], big.top_values)
