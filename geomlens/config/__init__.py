"""Dataclass configs: one `build_config` for the CLI, YAML and the Python API, and CLI flags
generated from the fields (type, default, docstring as help, registry choices)."""

from geomlens.config.base import Config, choices
from geomlens.config.build import build_config
from geomlens.config.docs import field_docs
from geomlens.config.flags import add_config_arguments, namespace_values
from geomlens.errors import ConfigError

__all__ = [
    "Config", "ConfigError", "add_config_arguments", "build_config", "choices", "field_docs",
    "namespace_values",
]
