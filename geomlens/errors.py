"""User-facing errors: each says what went wrong and what to do about it."""

from __future__ import annotations


class GeomlensError(Exception):
    """Base class for errors that the CLI prints without a stack trace."""


class UnknownModelError(GeomlensError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MissingPackageError(GeomlensError, ImportError):
    pass


class InputError(GeomlensError, ValueError):
    """Bad user input: empty text, unknown domain, bad device, ..."""


def require(module: str, pip: str) -> object:
    """Import ``module`` or raise a MissingPackageError that names the pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingPackageError(
            f"The optional package for {module!r} is not installed. Fix: {pip}"
        ) from exc


class ConfigError(GeomlensError, ValueError):
    """A bad config value or key: the message names the key and where it came from."""


class LegacyRunError(InputError):
    """A run directory of an earlier geomlens whose model is a pickle: the message names the
    command that converts it."""


class UnsafeFileError(InputError):
    """A file that cannot be read as data (tensors and plain values) without running code in it,
    or that is corrupt: it is not opened further."""
