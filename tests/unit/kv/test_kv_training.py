"""First-layer K/V trained from scratch: gradients reach layer 0, not the consumers' W_K/W_V."""

import pytest
import torch
import torch.nn.functional as F
from helpers import build_cfg

from geomlens.errors import InputError
from geomlens.kv import LayerMap, patch_kv, share_kv, unused_kv_parameters
from geomlens.training.config import TrainConfig
from geomlens.training.loop import Trainer, param_groups


def _loss(model, tokens):
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def test_gradients_reach_layer_0_only(llama_model, tokens):
    model = llama_model
    model.train()
    out = share_kv(model, "all")
    assert out["unused_params"] == 3 * 2 * (32 * 2 * 8 + 2 * 8)  # 3 layers x (W_K, W_V + biases)
    _loss(model, tokens).backward()
    attn0 = model.blocks[0].attn
    assert attn0._W_K.grad.abs().sum() > 0 and attn0._W_V.grad.abs().sum() > 0
    for layer in (1, 2, 3):
        attn = model.blocks[layer].attn
        assert attn._W_K.grad is None and attn._W_V.grad is None
        assert attn.W_Q.grad.abs().sum() > 0  # the consumer still trains its queries


def test_consumer_kv_get_no_gradient_even_unfrozen(llama_model, tokens):
    model = llama_model
    with patch_kv(model, LayerMap.parse("all", 4)):
        _loss(model, tokens).backward()
    assert model.blocks[0].attn._W_K.grad.abs().sum() > 0
    assert all(model.blocks[layer].attn._W_K.grad is None for layer in (1, 2, 3))


def test_share_kv_matches_patch(llama_model, tokens):
    model = llama_model
    with patch_kv(model, LayerMap.parse("all", 4)):
        expected = model(tokens)
    share_kv(model, "all")
    model.reset_hooks()  # permanent hooks survive a reset
    torch.testing.assert_close(model(tokens), expected, atol=0, rtol=0)


def test_trainer_with_kv_layers(tmp_path, one_thread):
    stream = torch.arange(3000) % 7
    cfg = TrainConfig(steps=4, batch_size=4, seq_len=16, eval_every=4, eval_tokens=256, warmup=1,
                      log_every=2, device="cpu", kv_layers="all")
    trainer = Trainer(cfg, tmp_path, model_cfg=build_cfg(n_layers=3), stream=stream)
    frozen = {id(p) for p in unused_kv_parameters(trainer.model, LayerMap.parse("all", 3))}
    assert frozen and not frozen & {id(p) for g in param_groups(trainer.model, cfg) for p in g["params"]}
    before = {i: p.detach().clone() for i, p in enumerate(trainer.model.parameters())}
    summary = trainer.train()
    after = dict(enumerate(trainer.model.parameters()))
    assert all(torch.equal(before[i], p) for i, p in after.items() if id(p) in frozen)
    assert summary["kv_layer_types"] == "0_0_0" and summary["kv_unused_params"] == 2 * 2 * (32 * 2 * 8 + 16)
    assert summary["trainable_params"] == summary["total_params"] - summary["kv_unused_params"]


def test_config_checks_spec():
    with pytest.raises(InputError, match="Bad layer spec"):
        TrainConfig(steps=1, kv_layers="everything")
    assert TrainConfig(steps=1).kv_layers is None
