"""The explorer on TransformerLens 4 (`TransformerBridge`), tiny random Llama and Gemma-3
models: it builds, its frame's logit lens is the model's own softmax, and the movers of the
last position are listed (not an error string)."""

import numpy as np
import pytest
import torch
from bridge_models import KINDS, bridge_and_reference

from geomlens.backend import installed_backend, view_of

pytestmark = [pytest.mark.tl4,
              pytest.mark.skipif(installed_backend() != "tl4", reason="needs TransformerLens 4")]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_explorer_on_a_bridge(kind):
    from geomlens.explorer import Explorer

    torch.manual_seed(0)
    bridge = bridge_and_reference(kind)[0]
    view = view_of(bridge)
    tokens = torch.randint(4, 64, (6,))
    ex = Explorer(bridge, tokens, lenses=("logit", "distance_raw"))
    frame = ex.frame()
    assert len(frame) == view.n_layers * 6 * 2 * 10
    last = frame[(frame.layer == view.n_layers - 1) & (frame.lens == "logit") & (frame.pos == 5)]
    p = torch.softmax(bridge(tokens[None])[0, 5], -1)
    top = p.topk(10)
    assert last.sort_values("rank").token_id.tolist() == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(last.sort_values("rank").value.to_numpy()), top.values,
                               rtol=1e-4, atol=1e-6)
    movers = ex.movers[0]
    assert set(movers) == set(range(view.n_layers))
    assert all("rows" in m and m["rows"] for m in movers.values()), movers


@torch.no_grad()
def test_explore_widget_with_sublayers_and_an_intervention_on_a_bridge():
    """The notebook entry point on a bridge: the widget's payload is built, the sub-layer rows
    are there, and a first-layer K/V intervention (Gemma-3's qk-norm) changes the grid."""
    from geomlens.explorer import explore

    torch.manual_seed(0)
    bridge = bridge_and_reference("gemma")[0]
    widget = explore(bridge, torch.randint(4, 64, (6,)), lenses=("logit",), sublayers=True)
    ex = widget.explorer
    assert len(ex.payload()) > 100
    assert {"hook_resid_mid", "hook_attn_out", "hook_mlp_out"} <= {h.split(".")[-1] for _, h in ex.grids[0].rows}
    changed = ex.intervene("kv_first", 1)
    assert not np.array_equal(changed[0].top_values, ex.grids[0].top_values)
