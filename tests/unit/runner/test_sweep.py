"""Sweep grids: product expansion, stable readable names, per-point configs."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from helpers import write_configs

from geomlens.errors import ConfigError
from geomlens.runner.runner import plan
from geomlens.runner.spec import load_experiment
from geomlens.runner.sweep import SINGLE_POINT, expand_sweep, point_name


def test_grid_is_the_product_in_order():
    sweep = {"head": ["linear", "tied", "hybrid"], "seed": [0, 1]}
    points = expand_sweep(sweep)
    expected = list(itertools.product(sweep["head"], sweep["seed"]))
    assert [tuple(p.values.values()) for p in points] == expected
    assert [p.index for p in points] == list(range(6))
    assert points[5].name == "head=hybrid,seed=1"
    assert len({p.name for p in points}) == 6


def test_names_are_stable_and_safe():
    a = expand_sweep({"model.name": ["a/b c"], "lr": [1e-3], "flag": [True], "x": [None], "l": [[1, 2]]})
    b = expand_sweep({"model.name": ["a/b c"], "lr": [1e-3], "flag": [True], "x": [None], "l": [[1, 2]]})
    assert a == b
    assert a[0].name == "model.name=a_b_c,lr=0.001,flag=true,x=none,l=1+2"
    assert re.fullmatch(r"[A-Za-z0-9._=,+~-]+", a[0].name)


def test_long_names_are_cut_with_a_hash():
    long_a = point_name({"text": "x" * 300 + "a"})
    long_b = point_name({"text": "x" * 300 + "b"})
    assert len(long_a) <= 120 and long_a != long_b
    assert long_a == point_name({"text": "x" * 300 + "a"})
    assert point_name({}) == SINGLE_POINT


def test_colliding_names_are_an_error():
    with pytest.raises(ConfigError, match="same directory name"):
        expand_sweep({"v": ["a/b", "a?b"]})


def test_points_get_their_own_dirs_and_values(tmp_path):
    cfg = write_configs(
        tmp_path / "configs", tmp_path / "runs", sweep="  mode: [sgd, sign]\n  opt.lr: [0.1, 0.2]\n"
    )
    points = plan(load_experiment(cfg))
    assert [p.point.name for p in points] == [
        "mode=sgd,opt.lr=0.1", "mode=sgd,opt.lr=0.2", "mode=sign,opt.lr=0.1", "mode=sign,opt.lr=0.2",
    ]
    assert [(p.config.mode, p.config.opt.lr) for p in points] == [
        ("sgd", 0.1), ("sgd", 0.2), ("sign", 0.1), ("sign", 0.2),
    ]
    assert all(p.config.opt.batch == 8 and p.config.n == 5 for p in points)  # rest untouched
    assert all(p.run_dir == Path(tmp_path / "runs" / p.point.name) for p in points)
    assert all(p.status == "new" for p in points)


def test_without_sweep_the_single_point_runs_in_out(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    (point,) = plan(load_experiment(cfg))
    assert point.point.name == SINGLE_POINT and point.run_dir == tmp_path / "runs"


def test_bad_swept_value_names_the_sweep(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  n: [1, two]\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml \(sweep\): key 'config\.n' expects int"):
        plan(load_experiment(cfg))
