"""TransformerLens 3 vs 4 on the offline models: the same numbers from either backend.

Each backend writes its figures for fixed text to ``$GEOMLENS_PARITY_DIR`` (default
``.parity/``) as ``<model>-<backend>.safetensors``; when the other backend's file is there (CI:
`scripts/test.sh` runs these tests under TransformerLens 3 first, then under TransformerLens 4)
they are compared:

- every layer's ``resid_post`` within 1e-4 relative (max |Δ| / max |x| per layer);
- the loss and the first-layer K/V clean and patched losses (modes ``all`` and ``prev``) within
  1e-4 relative;
- the Table 6.1 headline metrics (``neg_dist``, h = ln_final, target W_E: NDCG@full, NDCG@10,
  top-1, raw and calibrated JSD, permutation p) within 1e-4 absolute;
- the projection top-k token ids identical, their scores within 1e-4 relative;
- the explorer's `frame()`: top-10 token ids identical, the whole-vocabulary ranks within
  1 + 1e-4·rank (near-ties), its numbers within 1e-4; the movers of the last position identical;
- the ``W_E`` rows of the text's tokens.

Without the other file the cross-backend comparisons skip, saying so. Small settings: 4
segments of 24 tokens, 3 permutations, 50 bootstrap resamples.
"""

import numpy as np
import pytest
import torch
from backend_parity import other_backend_file, parity_dir
from safetensors.torch import load_file, save_file

from geomlens.analysis import AnalyzeConfig, analyze_tokens
from geomlens.analysis.headline import METRICS, headline_rows
from geomlens.backend import installed_backend, view_of
from geomlens.data import tokenize_segments
from geomlens.explorer import Explorer
from geomlens.kv import LayerMap, key_recipe, segment_losses
from geomlens.models import load_model, model_info
from geomlens.projection.project import project_parameters

pytestmark = [pytest.mark.integration, pytest.mark.tl4]

MODELS = {"smollm2-135m": 30, "gemma3-270m": 18}
RECIPE = {"smollm2-135m": "hook_k", "gemma3-270m": "k_norm"}
TOL = 1e-4
PROJECT_KINDS = ["mlp_in", "mlp_out", "q", "k", "v", "o"]
FRAME_INTS = ("token_id", "rank_final", "rank_next")
FRAME_FLOATS = ("value", "ndcg@10", "jsd", "step_norm", "attn_share")


def _losses(model, seqs, view) -> dict[str, torch.Tensor]:
    clean, _ = segment_losses(model, seqs)
    out = {"kv_clean": clean}
    for mode in ("all", "prev"):
        out[f"kv_patched_{mode}"], _ = segment_losses(
            model, seqs, layer_map=LayerMap.parse("all", view.n_layers), mode=mode)
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in out.items()}


def _headline(model, seqs) -> torch.Tensor:
    """[NDCG@full, NDCG@10, top-1, JSD raw, JSD calibrated, perm p] of the headline row."""
    cfg = AnalyzeConfig(hidden=["ln_final"], target=["W_E"], scores=["neg_dist"],
                        n_bootstrap=50, n_permutations=3, control_positions=32,
                        calibration_fraction=0.5, trajectories=False, layer_lens=False,
                        spearman=False)
    (row,) = headline_rows([analyze_tokens(model, seqs, cfg).summary])
    values = [row[m]["mean"] for m, _ in METRICS] + [row["perm_p"]]
    return torch.tensor(values, dtype=torch.float64)


def _projection(model, view) -> dict[str, torch.Tensor]:
    table = project_parameters(model, PROJECT_KINDS, [0, view.n_layers - 1], heads=[0],
                               neurons=list(range(4)), k=10)
    return {"proj_ids": torch.tensor(table.token_id.to_numpy(dtype=np.int64)),
            "proj_scores": torch.tensor(table.score.to_numpy(dtype=np.float64))}


def _explorer(model, tokens) -> dict[str, torch.Tensor]:
    ex = Explorer(model, tokens)
    frame = ex.frame()
    movers = [[r["component"] == "mlp", -1 if r["head"] is None else r["head"],
               -1 if r["neuron"] is None else r["neuron"]]
              for layer in sorted(ex.movers[0]) for r in ex.movers[0][layer]["rows"]]
    return {"frame_ints": torch.as_tensor(frame[list(FRAME_INTS)].to_numpy(dtype=np.int64)),
            "frame_floats": torch.as_tensor(frame[list(FRAME_FLOATS)].to_numpy(dtype=np.float64)),
            "movers": torch.as_tensor(movers, dtype=torch.int64)}


def _figures(model, seqs) -> dict[str, torch.Tensor]:
    view = view_of(model)
    names = [view.hooks(layer).resid_post for layer in range(view.n_layers)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(seqs[0][None], names_filter=lambda n: n in names)
    resid = torch.stack([cache[n][0] for n in names]).float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), seqs[0][1:])
    return {"resid_post": resid.contiguous(), "loss": loss[None].double(),
            **_losses(model, seqs, view), "headline": _headline(model, seqs),
            **_projection(model, view), **_explorer(model, seqs[0][:12]),
            "W_E_rows": view.W_E[seqs[0]].float().contiguous()}


@pytest.fixture(scope="module", params=list(MODELS))
def loaded(request, eval_texts):
    name = request.param
    model = load_model(name, device="cpu")
    view = view_of(model)
    assert view.backend == installed_backend() and view.n_layers == MODELS[name]
    seqs = tokenize_segments(model.tokenizer, eval_texts[:4], max_tokens=24)
    figs = _figures(model, seqs)
    save_file({k: v.contiguous() for k, v in figs.items()},
              str(parity_dir() / f"{name}-{view.backend}.safetensors"))
    yield name, model, seqs, figs
    del model


def _other(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(other_backend_file(name, ".safetensors")))


def test_run_records_backend_and_weights(loaded):
    name, model, _, _ = loaded
    info = model_info(model)
    assert info["backend"] == installed_backend()
    assert info["processing"]["fold_ln"] is False and info["processing"]["center_writing_weights"] is False
    view = view_of(model)
    assert "hook_embed" in info["W_E"] and f"x {view.embed_scale:.6g}, not centred" in info["W_E"]
    # both models tie W_U to the stored embedding: W_E = embed_scale * W_U.T (Gemma: sqrt(640))
    assert view.embed_scale == pytest.approx(640 ** 0.5 if "gemma" in name else 1.0)
    rows = torch.arange(0, view.d_vocab, 997)
    torch.testing.assert_close(view.W_E[rows], view.embed_scale * view.W_U.T[rows])
    assert key_recipe(model) == RECIPE[name]


@torch.no_grad()
def test_every_patched_hook_fires_and_is_writable(loaded):
    """Every hook name geomlens reads or writes fires, and a write changes the logits; for
    qk-norm models the key and query norm modules too (the K/V patch hooks them)."""
    _, model, seqs, _ = loaded
    view = view_of(model)
    tokens = seqs[0][None, :12]
    clean = model(tokens)
    for layer in (0, view.n_layers - 1):
        names = list(view.hooks(layer).all().values())
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        assert [n for n in names if n not in cache] == []
        for name in names:
            out = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: x * 0.5 + 0.1)])
            assert not torch.allclose(out, clean), name
        for module in (view.k_norm(layer), view.q_norm(layer)):
            if module is None:
                continue
            handle = module.register_forward_hook(lambda m, a, out: out * 0.5 + 0.1)
            try:
                assert not torch.allclose(model(tokens), clean)
            finally:
                handle.remove()
    assert (view.k_norm(0) is None) == (not view.qk_norm)


def test_patched_loss_is_above_clean(loaded):
    _, _, _, figs = loaded
    for mode in ("all", "prev"):
        assert (figs[f"kv_patched_{mode}"] > figs["kv_clean"]).all()
    assert torch.isfinite(figs["resid_post"]).all()


def test_resid_post_every_layer_matches_the_other_backend(loaded):
    name, _, _, figs = loaded
    other = _other(name)
    ours, theirs = figs["resid_post"], other["resid_post"]
    assert ours.shape == theirs.shape and ours.shape[0] == MODELS[name]
    rel = (ours - theirs).abs().amax(dim=(1, 2)) / theirs.abs().amax(dim=(1, 2))
    print(f"{name}: resid_post max relative difference per layer, worst {rel.max().item():.2e}")
    assert (rel < TOL).all(), rel


def test_losses_and_W_E_match_the_other_backend(loaded):
    name, _, _, figs = loaded
    other = _other(name)
    for key in ("loss", "kv_clean", "kv_patched_all", "kv_patched_prev"):
        rel = ((figs[key] - other[key]).abs() / other[key].abs()).max().item()
        print(f"{name}: {key} relative difference {rel:.2e}")
        assert rel < TOL, key
    torch.testing.assert_close(figs["W_E_rows"], other["W_E_rows"], rtol=1e-6, atol=1e-7)


def test_table61_headline_matches_the_other_backend(loaded):
    name, _, _, figs = loaded
    ours, theirs = figs["headline"], _other(name)["headline"]
    diff = (ours - theirs).abs().max().item()
    print(f"{name}: headline {ours.tolist()}, max |difference| {diff:.2e}")
    assert diff < TOL


def test_projection_top_k_matches_the_other_backend(loaded):
    name, _, _, figs = loaded
    other = _other(name)
    assert torch.equal(figs["proj_ids"], other["proj_ids"])
    rel = ((figs["proj_scores"] - other["proj_scores"]).abs()
           / other["proj_scores"].abs().clamp_min(1e-12)).max().item()
    print(f"{name}: projection top-k identical ({len(figs['proj_ids'])} ids), scores {rel:.2e}")
    assert rel < TOL


def test_explorer_frame_matches_the_other_backend(loaded):
    """Top-10 token ids and movers identical. The ranks of the final top-1 and of the next
    token among the whole vocabulary may differ by a near-tie deep in it (float32 rounding of
    two kernels): |Δrank| <= 1 + 1e-4·rank."""
    name, _, _, figs = loaded
    other = _other(name)
    ours_i, theirs_i = figs["frame_ints"], other["frame_ints"]
    assert torch.equal(ours_i[:, 0], theirs_i[:, 0])  # token_id
    assert torch.equal(figs["movers"], other["movers"])
    d_rank = (ours_i[:, 1:] - theirs_i[:, 1:]).abs()
    assert (d_rank <= 1 + 1e-4 * theirs_i[:, 1:].abs()).all()
    ours, theirs = figs["frame_floats"], other["frame_floats"]
    assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
    ok = ~torch.isnan(theirs)
    diff = ((ours - theirs).abs() / theirs.abs().clamp_min(1.0))[ok]
    print(f"{name}: explorer frame: top-10 ids and movers identical ({len(ours)} rows), "
          f"{int((d_rank > 0).sum())} ranks differ by <= {int(d_rank.max())}, numbers "
          f"{diff.max().item():.2e} (relative, or absolute below 1)")
    assert diff.max().item() < TOL
