"""Backend choice and the one-line errors when the other TransformerLens is installed."""

import pytest

from geomlens import backend
from geomlens.backend import version
from geomlens.errors import InputError, MissingPackageError

pytestmark = pytest.mark.tl4  # runs under both majors


def test_auto_is_the_installed_backend():
    have = backend.installed_backend()
    assert have == ("tl3" if backend.tl_major() < 4 else "tl4")
    assert backend.resolve_backend("auto") == have == backend.resolve_backend(have)


def test_the_other_backend_names_the_pip_command():
    other = "tl4" if backend.installed_backend() == "tl3" else "tl3"
    with pytest.raises(InputError, match="pip install 'transformer-lens"):
        backend.resolve_backend(other)
    with pytest.raises(InputError, match="Unknown backend"):
        backend.resolve_backend("tl5")


def test_require_tl3_under_tl4_is_one_line(monkeypatch):
    monkeypatch.setattr(backend, "tl_major", lambda: 4)
    with pytest.raises(MissingPackageError) as err:
        backend.require_tl3("Training")
    message = str(err.value)
    assert "\n" not in message and message.startswith("Training needs TransformerLens 3")
    assert version.INSTALL["tl3"] in message
