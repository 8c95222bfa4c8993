"""Training: schedule, config, data, param groups, learning, exact resume (tiny model, CPU)."""

from __future__ import annotations

import collections
import csv
import math

import pytest
import torch
from helpers import build_cfg

from geomlens.errors import InputError
from geomlens.training import TrainConfig, Trainer, get_lr
from geomlens.training.checkpoint import latest_checkpoint, load_checkpoint
from geomlens.training.data import TokenData, eval_windows, get_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _stream(n: int = 4000, period: int = 7, seed: int = 0) -> torch.Tensor:
    """A learnable token stream for vocab 50: a repeating pattern with 10% random tokens."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.arange(n) * 3) % period + 10
    noise = torch.randint(0, 50, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.1, noise, base)


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny", head="linear", steps=8, batch_size=4, seq_len=16, lr=1e-2, warmup=2,
                eval_every=4, eval_tokens=128, log_every=1, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


# -- schedule --------------------------------------------------------------------------------
def test_get_lr_matches_torch_cosine_annealing():
    lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 110
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)
    for t in range(total - warmup):
        assert get_lr(warmup + t, lr=lr, warmup=warmup, total=total, min_lr=min_lr) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


def test_get_lr_properties():
    kw = dict(lr=1.0, warmup=5, total=50, min_lr=0.1)
    warm = [get_lr(i, **kw) for i in range(5)]
    assert warm == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    decay = [get_lr(i, **kw) for i in range(5, 60)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert get_lr(50, **kw) == 0.1 and get_lr(1000, **kw) == 0.1


# -- config ----------------------------------------------------------------------------------
def test_config_needs_exactly_one_budget():
    with pytest.raises(InputError, match="exactly one"):
        TrainConfig(tokens=100, steps=10)
    with pytest.raises(InputError, match="exactly one"):
        TrainConfig()
    assert TrainConfig(tokens=1000, batch_size=2, seq_len=16).total_steps() == math.ceil(1000 / 32)
    assert TrainConfig(tokens=1000, batch_size=2, seq_len=16).total_steps(world_size=2) == math.ceil(1000 / 64)


def test_config_rejects_bad_values():
    with pytest.raises(InputError):
        TrainConfig(steps=10, sigma_init="zipf")
    with pytest.raises(InputError):
        TrainConfig(steps=10, batch_size=0)


def test_config_from_dict_rejects_unknown():
    from geomlens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        TrainConfig.from_dict({"steps": 3, "head": "tied", "bogus": 1})
    cfg = TrainConfig.from_dict({"steps": 3, "head": "tied"})
    assert cfg.head == "tied" and cfg.steps == 3


def test_train_command_registered():
    from geomlens.cli import COMMANDS

    kind = COMMANDS["train"]
    assert kind.config_cls is TrainConfig and kind.resumable


# -- data ------------------------------------------------------------------------------------
def test_get_batch_windows_are_contiguous_and_shifted():
    data = torch.arange(1000)
    g = torch.Generator().manual_seed(3)
    x, y = get_batch(data, batch_size=5, seq_len=12, generator=g)
    assert x.shape == y.shape == (5, 12)
    torch.testing.assert_close(y, x + 1)  # arange: next token = token + 1, windows contiguous
    g2 = torch.Generator().manual_seed(3)
    x2, _ = get_batch(data, batch_size=5, seq_len=12, generator=g2)
    assert torch.equal(x, x2)


def test_eval_windows_cover_distinct_tokens():
    data = torch.arange(100)
    x, y = eval_windows(data, seq_len=16, max_tokens=64)
    assert x.shape == (4, 16)
    assert len(set(x.flatten().tolist())) == x.numel()  # non-overlapping
    torch.testing.assert_close(y, x + 1)


def test_split_holds_out_the_end_and_unigram_prior():
    stream = _stream(1000)
    data = TokenData.from_stream(stream, val_fraction=0.1)
    assert len(data.val) == 100 and torch.equal(data.val, stream[-100:])
    assert torch.equal(torch.cat([data.train, data.val]), stream)
    prior = data.unigram_log_prior(50)
    counts = collections.Counter(data.train.tolist())
    ref = torch.tensor([math.log((counts.get(v, 0) + 1) / (len(data.train) + 50)) for v in range(50)])
    torch.testing.assert_close(prior, (ref - ref.mean()).float(), atol=1e-5, rtol=1e-5)


# -- trainer ---------------------------------------------------------------------------------
def test_param_groups_use_kernel_lr_and_decay(tmp_path):
    trainer = Trainer(_cfg(head="hybrid", kernel_lr=0.05, kernel_weight_decay=0.01), tmp_path,
                      model_cfg=build_cfg(), stream=_stream())
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["kernel"]["peak_lr"] == 0.05 and groups["kernel"]["weight_decay"] == 0.01
    assert groups["decay"]["peak_lr"] == trainer.cfg.lr and groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in groups["decay"]["params"])
    head_ids = {id(p) for p in trainer.model.unembed.parameters()}
    assert {id(p) for p in groups["kernel"]["params"]} == head_ids
    n_opt = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in trainer.model.parameters())  # every param exactly once


@pytest.mark.parametrize("head", ["linear", "hybrid", "gaussian", "sq_dist_bias"])
def test_training_lowers_validation_loss(tmp_path, head):
    cfg = _cfg(head=head, steps=40, eval_every=40, lr=3e-3, warmup=5)
    summary = Trainer(cfg, tmp_path, model_cfg=build_cfg(), stream=_stream()).train()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert last < first - 0.5, (first, last)
    assert summary["val_loss"] == pytest.approx(last)
    assert summary["val_perplexity"] == pytest.approx(math.exp(last))
    assert 0.0 <= summary["val_accuracy"] <= 1.0


def test_summary_and_outputs(tmp_path):
    trainer = Trainer(_cfg(head="sigma", sigma_init="frequency"), tmp_path, model_cfg=build_cfg(),
                      stream=_stream())
    summary = trainer.train()
    assert summary["head_params"] == 50 == trainer.model.unembed.n_params()
    assert summary["total_params"] == sum(p.numel() for p in trainer.model.parameters())
    assert summary["steps"] == 8 and summary["tokens"] == 8 * 4 * 16
    assert summary["tokens_per_s"] > 0 and summary["device"] == "cpu"
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert list(rows[0]) == ["step", "tokens", "train_loss", "val_loss", "val_accuracy", "lr", "tokens_per_s"]
    assert [int(r["step"]) for r in rows] == list(range(9))
    kernel = torch.load(tmp_path / "kernel.pt", weights_only=True)
    assert kernel["sigma"].shape == (50,) and int(kernel["counts"].sum()) == len(trainer.data.train)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    for key in ("config", "model_config", "model", "optimizer", "scheduler", "step", "rng",
                "data_generator", "metrics"):
        assert key in state
    assert state["step"] == 8 and state["config"]["head"] == "sigma"


def _rows(path):
    """metrics rows without the timing column (tokens/s differs between runs by nature)."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in csv.DictReader(open(path))]


@pytest.mark.parametrize("head", ["linear", "hybrid"])
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, head):
    cfg = _cfg(head=head, steps=10, checkpoint_every=5, eval_every=3)
    straight = Trainer(cfg, tmp_path / "a", model_cfg=build_cfg(), stream=_stream())
    straight.train()

    first = Trainer(cfg, tmp_path / "b", model_cfg=build_cfg(), stream=_stream())
    assert first.train(stop_at=7) == {}  # killed at step 7: checkpoint at 5, rows 6-7 are lost
    del first
    torch.manual_seed(1234)  # the resumed process starts with a different global RNG state
    resumed = Trainer(cfg, tmp_path / "b", model_cfg=build_cfg(), stream=_stream())
    assert resumed.step == 5
    resumed.train()

    assert _rows(tmp_path / "a" / "metrics.csv") == _rows(tmp_path / "b" / "metrics.csv")
    for (k, va), (_, vb) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(va, vb), k
