"""`geomlens analyze` on smollm2-135m with the native code and with GEOMLENS_NATIVE=0: the same
summary.json, byte for byte."""

import pytest

from geomlens import native
from geomlens.cli import main

pytestmark = pytest.mark.integration

ARGS = ["analyze", "--model", "smollm2-135m", "--n-segments", "1", "--max-tokens", "32",
        "--n-bootstrap", "50", "--n-permutations", "64", "--control-positions", "32",
        "--trajectory-segments", "1", "--layer-lens-positions", "16"]


def _run(tmp_path, monkeypatch, flag: str) -> bytes:
    monkeypatch.setenv("GEOMLENS_NATIVE", flag)
    native.library.cache_clear()
    out = tmp_path / f"native-{flag}"
    try:
        assert main([*ARGS, "--out", str(out)]) == 0
    finally:
        native.library.cache_clear()
    return (out / "summary.json").read_bytes()


@pytest.mark.skipif(native.library("permnull") is None, reason="no native code")
def test_summary_json_is_identical_without_native(tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, "1") == _run(tmp_path, monkeypatch, "0")
