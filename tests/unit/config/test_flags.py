"""Configs make the CLI: one flag per field, help from the field docstring, defaults from the
dataclass alone, registry choices, and one build_config for CLI / YAML / Python."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from geomlens.cli import COMMANDS, build_parser
from geomlens.config import ConfigError, add_config_arguments, build_config, field_docs
from geomlens.config.flags import config_fields_with_flags, namespace_values
from geomlens.models.command import SmokeConfig
from geomlens.runner.command import Command


def _command_configs() -> dict[str, type]:
    """Every command whose flags come from a dataclass config."""
    out = {}
    for name in COMMANDS:
        if isinstance(COMMANDS[name], Command):
            out[name] = COMMANDS[name].config_cls
    out["smoke"] = SmokeConfig
    return out


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def test_the_run_commands_are_covered():
    assert {"analyze", "ablate", "train", "smoke"} <= set(_command_configs())


@pytest.mark.parametrize("command", sorted(_command_configs()))
def test_every_config_field_has_a_flag_with_its_docstring(command):
    cls = _command_configs()[command]
    options = {s for a in _subparser(command)._actions for s in a.option_strings}
    helps = {a.dest: a.help for a in _subparser(command)._actions}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = config_fields_with_flags(cls)[f.name]
        assert flag in options, f"{command}: field {f.name} has no flag {flag}"
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        assert docs[f.name].split()[0] in helps[f.name]


@pytest.mark.parametrize("command", sorted(_command_configs()))
def test_no_flag_given_means_the_dataclass_default(command):
    cls = _command_configs()[command]
    ns = _subparser(command).parse_args([])
    assert namespace_values(ns, cls) == {}  # nothing from argparse: defaults live in the dataclass


def test_flags_are_parsed_into_the_same_config_as_python():
    from geomlens.analysis.config import AnalyzeConfig

    ns = _subparser("analyze").parse_args(
        ["--domains", "news,fiction", "--ks", "1", "full", "--no-spearman", "--n-segments", "none",
         "--score", "dot", "cosine", "--eps", "1e-3"])
    cfg = build_config(AnalyzeConfig, namespace_values(ns, AnalyzeConfig))
    assert cfg == AnalyzeConfig(domains=["news", "fiction"], ks=[1, None], spearman=False,
                                scores=["dot", "cosine"], eps=1e-3)


def test_text_source_flags_are_one_exclusive_group():
    parser = _subparser("ablate")
    with pytest.raises(SystemExit):
        parser.parse_args(["--domains", "news", "--texts", "x.jsonl"])
    titles = [g.title for g in parser._action_groups]
    assert "text source" in titles


def test_unknown_key_names_the_closest_valid_one():
    from geomlens.analysis.config import AnalyzeConfig

    with pytest.raises(ConfigError, match="unknown key 'n_segment'.*Did you mean 'n_segments'"):
        build_config(AnalyzeConfig, {"n_segment": 3})
    with pytest.raises(ConfigError, match="unknown key 'n_segment'"):
        AnalyzeConfig.from_dict({"n_segment": 3})


def test_registry_choice_errors_name_the_closest():
    from geomlens.analysis.config import AnalyzeConfig
    from geomlens.errors import InputError

    with pytest.raises(InputError, match="--scores: unknown score 'neg_dst'.*Did you mean 'neg_dist'"):
        AnalyzeConfig(scores=["neg_dst"])


def test_generated_flags_for_a_new_config():
    @dataclasses.dataclass(kw_only=True)
    class Demo:
        rate: float | None = None
        """Step size."""
        names: list[str] = dataclasses.field(default_factory=lambda: ["a"])
        """Some names."""
        on: bool = True
        """A switch."""
        opts: dict = dataclasses.field(default_factory=dict)
        """JSON options."""

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Demo)
    ns = parser.parse_args(["--rate", "none", "--names", "x", "y,z", "--no-on", "--opts", '{"k": 1}'])
    assert build_config(Demo, namespace_values(ns, Demo)) == Demo(
        rate=None, names=["x", "y", "z"], on=False, opts={"k": 1})
    assert "(default: True)" in parser.format_help()
