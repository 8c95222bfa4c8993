"""Trained models of run directories; ProjectConfig/AlignConfig validation and their run functions."""

import json

import pandas as pd
import pytest
import torch

from geomlens.errors import ConfigError, InputError, UnknownModelError
from geomlens.models import is_trained, load_model, load_trained, token_map
from geomlens.projection import (
    COLUMNS,
    AlignConfig,
    ProjectConfig,
    parse_index_spec,
    run_align,
    run_project,
)
from geomlens.projection.config import validate_project
from geomlens.training.data import TokenData


def test_run_dir_loads_as_the_trained_model(make_run):
    run_dir, _, trained = make_run("full")
    assert is_trained(run_dir) and not is_trained(run_dir.parent)
    model = load_model(str(run_dir), device="cpu")
    trained.eval()
    tokens = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), trained(tokens))
    torch.testing.assert_close(model.W_U, trained.unembed.W_U)
    assert model.geomlens_info["step"] == 3 and model.geomlens_info["head"] == "linear"
    assert token_map(model).kept is None


def test_reduced_vocab_run_gets_the_trainers_token_map(make_run):
    run_dir, stream, _ = make_run("reduced", vocab_size=12)
    model = load_trained(run_dir, device="cpu")
    tm = token_map(model)
    ref = TokenData.from_stream(stream, val_fraction=0.02).reduce_vocab(12)
    assert model.cfg.d_vocab == 12 and torch.equal(tm.kept, ref.kept) and tm.oov_id == 11
    assert tm.labels([11])[0] == "<oov>"
    assert torch.equal(tm.from_original(tm.to_original(torch.arange(11))), torch.arange(11))
    assert model.tokenizer is None  # the tokenizer's ids are not the model's


def test_index_specs():
    assert parse_index_spec("all") is None and parse_index_spec(None) is None
    assert parse_index_spec("0,3,5-7") == [0, 3, 5, 6, 7]
    assert parse_index_spec(" 2 , 2-3 ", 4) == [2, 3]
    for bad in ("", "a", "3-1", "1,,2", "-1"):
        with pytest.raises(InputError):
            parse_index_spec(bad)
    with pytest.raises(InputError, match="do not exist"):
        parse_index_spec("0-5", 3)


def test_configs_validate_cheaply(tmp_path):
    assert ProjectConfig().k == 20 and ProjectConfig().through is None
    for bad in (dict(what=["mlp_up"]), dict(layers="x"), dict(through="W_X"), dict(k=0),
                dict(pair_tokens=1)):
        with pytest.raises(InputError):
            ProjectConfig(**bad)
    with pytest.raises(UnknownModelError, match="checkpoint"):  # checked before a run dir exists
        validate_project(ProjectConfig(model=str(tmp_path)))
    with pytest.raises(InputError, match="--layers"):
        validate_project(ProjectConfig(model="smollm2-135m", layers="29-31"))
    with pytest.raises(InputError, match="--model-b is required"):
        AlignConfig()
    for bad in (dict(kinds=["ov"]), dict(reduce="max"), dict(n_permutations=-1)):
        with pytest.raises(InputError):
            AlignConfig(model_b="smollm2-135m", **bad)
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        ProjectConfig.from_dict({"model": "smollm2-135m", "k": 5, "bogus": 1})
    assert ProjectConfig.from_dict({"model": "smollm2-135m", "k": 5}).k == 5


def test_run_project_on_a_run_dir(make_run, tmp_path):
    run_dir, _, _ = make_run("p")
    out = tmp_path / "out"
    out.mkdir()
    cfg = ProjectConfig(model=str(run_dir), layers="1", neurons="0-1", k=3, pair_tokens=None,
                        device="cpu")
    summary = run_project(cfg, out)
    table = pd.read_parquet(out / "projection.parquet")
    csv = pd.read_csv(out / "projection.csv")
    assert tuple(table.columns) == tuple(csv.columns) == COLUMNS
    assert summary["n_rows"] == len(table) == len(csv) and set(table["layer"]) == {1}
    assert summary["pair_heads_searched"] == 2 * 4  # ov and qk x 4 heads
    json.dumps(summary)


def test_run_align_on_two_seeds(make_run, tmp_path):
    a, _, _ = make_run("a", seed=0)
    b, _, _ = make_run("b", seed=1)
    out = tmp_path / "align"
    out.mkdir()
    summary = run_align(AlignConfig(model_a=str(a), model_b=str(b), n_permutations=3, k=5,
                                    device="cpu"), out)
    for name in ("alignment_layers.csv", "alignment_neurons.csv", "alignment_scores.csv",
                 "alignment_heatmap.png", "alignment_heatmap_raw.png"):
        assert (out / name).exists()
    layers = pd.read_csv(out / "alignment_layers.csv")
    assert set(layers["space"]) == {"embedding", "raw"}
    assert set(summary["layer_matching"]) == {"embedding", "raw"}
    json.dumps(summary)
