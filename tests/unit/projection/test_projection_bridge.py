"""Projection and the movement view on TransformerLens 4 (`TransformerBridge`), tiny random
Llama and Gemma-3 models. References: the transformers model's own weights, and the block
outputs the bridge records (the parts must sum to them)."""

import pytest
import torch
from bridge_models import KINDS, bridge_and_reference

from geomlens.backend import installed_backend, view_of

pytestmark = [pytest.mark.tl4,
              pytest.mark.skipif(installed_backend() != "tl4", reason="needs TransformerLens 4")]


@pytest.fixture(params=KINDS, scope="module")
def bridge(request):
    torch.manual_seed(0)
    return bridge_and_reference(request.param)[0]


@torch.no_grad()
def test_component_parts_sum_to_the_block_outputs(bridge):
    from geomlens.projection.attribution import attribution_hooks, component_parts

    view = view_of(bridge)
    tokens = torch.randint(0, 64, (1, 7))
    names = set(attribution_hooks(view.n_layers)) | {view.hooks(1).attn_out, view.hooks(1).mlp_out}
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    parts = component_parts(bridge, cache, 1, 5)
    torch.testing.assert_close(parts["attn"].sum(0) + parts["attn_bias"][0],
                               cache[view.hooks(1).attn_out][0, 5], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(parts["mlp"].sum(0) + parts["mlp_bias"][0],
                               cache[view.hooks(1).mlp_out][0, 5], rtol=1e-4, atol=1e-5)


def test_norm_gain_is_what_the_norm_multiplies_by(bridge):
    """An RMSNorm of a unit-RMS vector returns its gain times the vector (eps aside)."""
    view = view_of(bridge)
    x = torch.randn(32)
    x = x / x.pow(2).mean().sqrt()
    with torch.no_grad():
        out = bridge.blocks[1].ln2.original_component(x[None])[0]
    torch.testing.assert_close(out, view.norm_gain(1, "ln2") * x, rtol=1e-4, atol=1e-4)
    layout = "sandwich" if "ln1_post" in bridge.blocks[0].submodules else "pre_norm"
    assert view.block_layout == layout


@torch.no_grad()
def test_projection_top_tokens_match_a_direct_product(bridge):
    from geomlens.projection.project import project_parameters

    view = view_of(bridge)
    hf = bridge.original_model
    table = project_parameters(bridge, ["mlp_out", "v"], [1], heads=[0], neurons=[0, 3], k=4)
    W_out = hf.model.layers[1].mlp.down_proj.weight.T  # [d_mlp, d_model]
    for neuron in (0, 3):
        want = (view.W_U.T @ W_out[neuron]).topk(4).indices.tolist()
        got = table[(table.kind == "mlp_out") & (table.neuron == neuron)
                    & (table.direction == "top")].sort_values("rank").token_id.tolist()
        assert got == want
    assert set(table.kind) == {"mlp_out", "v"}
