"""YAML loading: defaults merging, overrides, validation into the kind's dataclass."""

from __future__ import annotations

import pytest
from helpers import ToyConfig, ToyOpt, write_configs

from geomlens.cli import main
from geomlens.config.build import build_config
from geomlens.errors import ConfigError, GeomlensError
from geomlens.runner.runner import plan
from geomlens.runner.spec import COMMAND_LINE, load_experiment, parse_override


def test_defaults_are_merged_in_order_then_own_keys(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "a.yaml").write_text("out: runs/a\nconfig:\n  seed: 1\n  n: 2\n  opt: {lr: 0.5, batch: 4}\n")
    (folder / "b.yaml").write_text("config:\n  n: 3\n  opt: {batch: 16}\n  tags: [x]\n")
    (folder / "c.yaml").write_text(
        "defaults: [a, b.yaml]\nexperiment: toy\nconfig:\n  dim: 7\n  tags: [y, z]\n"
    )
    spec = load_experiment(folder / "c.yaml")
    assert spec.experiment == "toy" and spec.out == "runs/a"
    # b overrides a key by key (maps merge), c overrides b; lists are replaced, not merged
    assert spec.config == {"seed": 1, "n": 3, "opt": {"lr": 0.5, "batch": 16}, "tags": ["y", "z"], "dim": 7}
    assert spec.sources["config.opt.lr"] == str(folder / "a.yaml")
    assert spec.sources["config.opt.batch"] == str(folder / "b.yaml")
    assert spec.sources["config.dim"] == str(folder / "c.yaml")
    assert spec.sources["out"] == str(folder / "a.yaml")


def test_overrides_dotted_bare_and_top_level(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1, 2]\n")
    spec = load_experiment(
        cfg, ["opt.lr=1e-3", "config.opt.batch=2", "tags=[a, b]", "mode=sign", "clip=null",
              "out=elsewhere", "sweep.n=[1, 2]"],
    )
    assert spec.out == "elsewhere"
    # YAML 1.1 reads 1e-3 as a string; it becomes a float when validated against `lr: float`
    assert spec.config["opt"] == {"lr": "1e-3", "batch": 2}
    assert spec.config["tags"] == ["a", "b"] and spec.config["mode"] == "sign"
    assert spec.config["clip"] is None and "clip" in spec.config
    assert spec.sweep == {"seed": [0, 1, 2], "n": [1, 2]}
    assert spec.sources["config.opt.lr"] == COMMAND_LINE
    assert spec.sources["sweep.n"] == COMMAND_LINE
    assert spec.sources["config.opt.batch"] == COMMAND_LINE
    assert spec.sources["config.n"] == str(cfg)  # untouched keys keep their file


def test_override_pins_a_swept_key(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", sweep="  seed: [0, 1]\n  n: [1, 2]\n")
    spec = load_experiment(cfg, ["seed=5"])
    assert spec.sweep == {"n": [1, 2]}
    assert spec.config["seed"] == 5


def test_child_can_drop_a_parent_sweep(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "p.yaml").write_text("experiment: toy\nout: o\nsweep:\n  seed: [0, 1]\n  n: [1, 2]\n")
    (folder / "c.yaml").write_text("defaults: [p]\nsweep:\n  seed: null\n")
    assert load_experiment(folder / "c.yaml").sweep == {"n": [1, 2]}


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError, match="command line"):
        parse_override(text)


def test_parse_override_values_are_yaml_not_python():
    assert parse_override("a=3") == ("a", 3)
    assert parse_override("a=3.5") == ("a", 3.5)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=__import__('os')") == ("a", "__import__('os')")  # a string, not code


def test_validated_into_dataclass_with_coercion(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    (point,) = plan(load_experiment(cfg, ["opt.lr=1", "clip=2", "tags=[u]"]))
    assert point.config == ToyConfig(seed=0, n=5, opt=ToyOpt(lr=1.0, batch=8), clip=2.0, tags=["u"])
    assert isinstance(point.config.opt.lr, float) and isinstance(point.config.clip, float)


def test_yaml11_exponent_string_accepted_for_float_fields(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", extra="  clip: 1e-3\n")
    (point,) = plan(load_experiment(cfg))
    assert point.config.clip == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "where, overrides, key, origin",
    [
        ("base", [], "config.nn", "base.yaml"),
        ("child", [], "config.opt.lrr", "toy.yaml"),
        ("cli", ["opt.momentum=0.9"], "config.opt.momentum", "command line"),
        ("sweep", ["sweep.sed=[1,2]"], "config.sed", "command line (sweep)"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path, where, overrides, key, origin):
    folder = tmp_path / "configs"
    cfg = write_configs(folder, tmp_path / "runs")
    if where == "base":
        (folder / "base.yaml").write_text("config:\n  nn: 3\n")
    if where == "child":
        cfg.write_text(cfg.read_text().replace("lr: 0.1", "lrr: 0.1"))
    with pytest.raises(ConfigError) as info:
        plan(load_experiment(cfg, overrides))
    message = str(info.value)
    assert repr(key) in message and origin in message
    assert "unknown key" in message


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("n=2.5", "config.n", "int"),
        ("n=true", "config.n", "int"),  # bool is not an int
        ("opt.lr=fast", "config.opt.lr", "float"),
        ("mode=adam", "config.mode", "one of 'sgd', 'sign'"),
        ("clip=[1]", "config.clip", "float or NoneType"),
        ("tags=[1]", "config.tags[0]", "str"),
        ("tags=a", "config.tags", "list"),
        ("opt=3", "config.opt", "a mapping for ToyOpt"),
        ("device=0", "config.device", "str or NoneType"),
    ],
)
def test_type_mismatch_names_key_file_and_type(tmp_path, override, key, expected):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    with pytest.raises(ConfigError) as info:
        plan(load_experiment(cfg, [override]))
    message = str(info.value)
    assert repr(key) in message and COMMAND_LINE in message and expected in message


def test_type_error_in_file_names_the_file(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs", extra="  dim: four\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml: key 'config\.dim' expects int"):
        plan(load_experiment(cfg))


def test_post_init_validation_is_reported(tmp_path):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    with pytest.raises(ConfigError, match="n must be >= 1"):
        plan(load_experiment(cfg, ["n=0"]))


def test_missing_required_field():
    from dataclasses import dataclass

    @dataclass(kw_only=True)
    class Needs:
        seed: int
        """required"""

    with pytest.raises(ConfigError, match="missing required key"):
        build_config(Needs, {})
    assert build_config(Needs, {"seed": 2}) == Needs(seed=2)


@pytest.mark.parametrize(
    "text, match",
    [
        ("experiment: toy\nout: o\nconfg: {}\n", "unknown top-level key 'confg'"),
        ("out: o\n", "missing 'experiment"),
        ("experiment: toy\nout: 3\n", "'out' must be"),
        ("experiment: toy\nout: o\nsweep:\n  seed: 3\n", "sweep.seed must be a non-empty list"),
        ("experiment: toy\nout: o\nconfig: [1]\n", "'config' must be a mapping"),
        ("experiment: nosuchkind\nout: o\n", "unknown command 'nosuchkind'"),
        ("defaults: [missing]\nexperiment: toy\nout: o\n", "defaults entry 'missing' not found"),
        ("experiment: [toy\n", "not valid YAML"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        plan(load_experiment(path))
    assert "bad.yaml" in str(info.value)


def test_circular_defaults(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\n")
    with pytest.raises(ConfigError, match="circular defaults"):
        load_experiment(tmp_path / "a.yaml")


def test_cli_prints_config_errors_without_traceback(tmp_path, capsys):
    cfg = write_configs(tmp_path / "configs", tmp_path / "runs")
    assert main(["run", str(cfg), "opt.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "config.opt.lrr" in err and "command line" in err and "Traceback" not in err
    assert issubclass(ConfigError, GeomlensError)
    assert not (tmp_path / "runs").exists()  # nothing was created
