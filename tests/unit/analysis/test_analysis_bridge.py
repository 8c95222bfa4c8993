"""`analyze_tokens` on TransformerLens 4 (`TransformerBridge`), tiny random Llama and Gemma-3
models, with the layer lens and trajectories on. Property checked: the ``dot`` score of
h = ln_final against W_U is the model's own logits, so its NDCG@full is 1 and its JSD 0."""

import pytest
import torch
from bridge_models import KINDS, bridge_and_reference

from geomlens.backend import installed_backend

pytestmark = [pytest.mark.tl4,
              pytest.mark.skipif(installed_backend() != "tl4", reason="needs TransformerLens 4")]


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_tokens_on_a_bridge(kind):
    from geomlens.analysis import AnalyzeConfig, analyze_tokens

    torch.manual_seed(0)
    bridge = bridge_and_reference(kind)[0]
    seqs = [torch.randint(4, 64, (n,)) for n in (9, 7, 8, 6)]
    cfg = AnalyzeConfig(hidden=["ln_final", "resid_post"], target=["W_U"], scores=["dot", "neg_dist"],
                        n_bootstrap=20, n_permutations=3, control_positions=16,
                        calibration_fraction=0.5, layer_lens_positions=8, spearman=False)
    summary = analyze_tokens(bridge, seqs, cfg).summary
    by = {(r["hidden"], r["target"], r["score"]): r for r in summary["results"]}
    dot = by[("ln_final", "W_U", "dot")]["overall"]
    assert dot["ndcg@full"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert dot["jsd"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert summary["model"]["backend"] == "tl4"
    assert set(range(3)) <= set(summary["layers"]["layers"])  # the layer lens saw every block
