"""The native code: built by torch.utils.cpp_extension into a private cache (mode 0700, the
library's hash checked before it is loaded), on torch's thread pool with the same results at
any thread count, and said unavailable in one line when it cannot be used."""

import logging
import os
import stat

import pytest
import torch

from geomlens import native
from geomlens.metrics import selection

needs_native = pytest.mark.skipif(native.library("rank") is None, reason="no native code")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache root, and `library` forgetting what it loaded."""
    monkeypatch.setenv("GEOMLENS_CACHE", str(tmp_path))
    native.library.cache_clear()
    native._say_unavailable.cache_clear()
    yield tmp_path / "native"
    native.library.cache_clear()
    native._say_unavailable.cache_clear()


@needs_native
def test_build_goes_to_a_private_cache_with_a_checked_hash(fresh_cache):
    lib = native.library("ranks")
    assert lib is not None
    assert stat.S_IMODE(fresh_cache.stat().st_mode) == 0o700
    (folder,) = fresh_cache.iterdir()
    target = folder / "geomlens_ranks.so"
    assert (folder / "sha256").read_text() == native._digest(target)
    genuine = target.read_bytes()
    assert native._build("ranks") == target  # cached: the hash matches, nothing is rebuilt
    assert target.read_bytes() == genuine
    tampered = genuine[:-1] + bytes([genuine[-1] ^ 1])
    target.write_bytes(tampered)  # changed after the build (newer than its object file)
    assert native._build("ranks") == target
    assert target.read_bytes() != tampered  # rebuilt from scratch, not loaded
    assert (folder / "sha256").read_text() == native._digest(target)


def test_a_cache_others_could_write_is_emptied_and_closed(fresh_cache):
    """A library planted in a folder others could write is never loaded."""
    fresh_cache.mkdir(parents=True)
    planted = fresh_cache / "rank-0000000000000000"
    planted.mkdir()
    (planted / "geomlens_rank.so").write_bytes(b"not a library")
    os.chmod(fresh_cache, 0o777)
    native._private(fresh_cache)
    assert stat.S_IMODE(fresh_cache.stat().st_mode) == 0o700
    assert not any(fresh_cache.iterdir())


def test_a_cache_of_another_user_is_refused_in_one_line(fresh_cache, monkeypatch, caplog):
    fresh_cache.mkdir(parents=True, mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(fresh_cache).st_uid + 1)
    with caplog.at_level(logging.WARNING, logger="geomlens.native"):
        assert native.library("rank") is None
        assert native.library("ranks") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not to you" in lines[0] and "torch path" in lines[0]
    assert not any(fresh_cache.iterdir())  # nothing built, nothing loaded


def test_no_compiler_is_said_in_one_line(fresh_cache, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with caplog.at_level(logging.WARNING, logger="geomlens.native"):
        assert native.library("permnull") is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no C++ compiler" in line and "\n" not in line


def test_switched_off_by_the_environment(fresh_cache, monkeypatch):
    monkeypatch.setenv("GEOMLENS_NATIVE", "0")
    assert native.library("rank") is None


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_results_at_any_thread_count(threads):
    """at::parallel_for splits rows over torch's threads: every split gives the same bits."""
    g = torch.Generator().manual_seed(0)
    values, gains = torch.randn(13, 1000, generator=g), torch.rand(13, 1000, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    want = selection.rank_summary(values, gains, k=16)
    torch.set_num_threads(threads)
    try:
        got = selection.rank_summary(values, gains, k=16)
    finally:
        torch.set_num_threads(before)
    for field in ("top_values", "top_indices", "low", "scale", "count", "tail_gains"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field


def _summary_json(model, monkeypatch, native_on: bool) -> str:
    """summary.json's text for a small analysis of the tiny model (K = 16 < V = 50: the tail
    buckets and the permutation null's brackets are used), with or without the native code."""
    import json

    from geomlens.analysis import AnalyzeConfig, analyze_tokens, summarize

    monkeypatch.setenv("GEOMLENS_NATIVE", "1" if native_on else "0")
    native.library.cache_clear()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in (10, 7, 12, 5, 9, 11)]
    cfg = AnalyzeConfig(model="tiny", n_bootstrap=100, n_permutations=40, control_positions=30,
                        topk_exact=16, ks=[1, 10, None], trajectories=False, batch_size=4,
                        spearman_positions=20)
    result = analyze_tokens(model, seqs, cfg, domains=["a", "a", "b", "b", "b", "a"])
    try:
        return json.dumps(summarize(result, cfg, n_layers=model.cfg.n_layers), sort_keys=True)
    finally:
        native.library.cache_clear()


@needs_native
def test_analysis_summary_is_identical_without_native(tiny_model, monkeypatch):
    """The native code changes speed only: the summary of a whole analysis (observed metrics,
    Spearman, the permutation null, calibration) is the same text with GEOMLENS_NATIVE=0."""
    with_native = _summary_json(tiny_model, monkeypatch, True)
    assert '"n_permutations": 40' in with_native
    assert with_native == _summary_json(tiny_model, monkeypatch, False)
