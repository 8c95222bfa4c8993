"""Trajectories, lenses and `geomlens ablate` on the real smollm2-135m (2 segments, 16 tokens)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import cdist

from geomlens.cli import main
from geomlens.data import batch_sequences, load_corpus, tokenize_segments
from geomlens.geometry import summarize_layers, trajectory_stats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def batch(smollm2):
    texts = load_corpus("news,fiction", n_segments=1)["text"]
    seqs = tokenize_segments(smollm2.tokenizer, texts, max_tokens=16)
    return next(batch_sequences(seqs, batch_size=2, pad_id=smollm2.tokenizer.eos_token_id))


@torch.no_grad()
def test_trajectory_stats_on_smollm2(smollm2, batch):
    tokens, lengths = batch
    df = trajectory_stats(smollm2, tokens, lengths, normalize_lens=True)
    n_layers = smollm2.cfg.n_layers
    assert len(df) == int(lengths.sum()) * n_layers
    logits, cache = smollm2.run_with_cache(tokens)
    for layer in (0, n_layers // 2, n_layers - 1):
        c = lambda n: cache[f"blocks.{layer}.{n}"]  # noqa: E731
        torch.testing.assert_close(c("hook_resid_post") - c("hook_resid_pre"),
                                   c("hook_attn_out") + c("hook_mlp_out"), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(df.attn_share + df.mlp_share, 1.0, atol=1e-3)
    last = df[df.layer == n_layers - 1]
    b, p = last.batch_idx.to_numpy().copy(), last.pos.to_numpy().copy()
    lg = logits[b, p].double().numpy()
    assert (last.logit_rank_top1 == 0).all()
    nxt_ok = last.logit_rank_next.notna().to_numpy()
    nxt = tokens.numpy()[b[nxt_ok], p[nxt_ok] + 1]
    ref = (lg[nxt_ok] > lg[nxt_ok, nxt][:, None]).sum(1)
    assert np.mean(last.logit_rank_next.to_numpy()[nxt_ok] == ref) >= 0.95  # float round-off ties
    h = cache["ln_final.hook_normalized"][b, p].double().numpy()
    d = cdist(h, smollm2.W_E.detach().double().numpy())
    np.testing.assert_array_equal(last.nearest_token_id.to_numpy(), d.argmin(1))
    summary = summarize_layers(df)
    print(summary[["layer", "step_norm_median", "attn_share_mean", "inertia_cos_median",
                   "dlens_rank_next_median", "logit_rank_next_median"]].to_string())


def test_ablate_cli_sweep_on_two_layers(smollm2, tmp_path):
    out = tmp_path / "abl"
    rc = main(["ablate", "--model", "smollm2-135m", "--sweep", "--layers", "0,1", "--method", "zero",
               "--domains", "news", "--n-segments", "2", "--max-tokens", "16", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out / "ablation.csv")
    assert len(table) == 4 and set(table.component) == {"attn_out", "mlp_out"}
    summary = json.loads((out / "summary.json").read_text())
    assert np.allclose(table.loss - table.delta_loss, summary["clean_loss"])
    assert 0 < summary["clean_metric"] <= 1 and summary["n_sequences"] == 2
    for name in ("config.json", "env.json", "done", "heatmap_delta_loss.png", "heatmap_delta_metric.png"):
        assert (out / name).exists()
    print(table.to_string())
    assert main(["ablate", "--layers", "99", "--domains", "news", "--n-segments", "1",
                 "--max-tokens", "8", "--device", "cpu", "--out", str(tmp_path / "bad")]) == 2
