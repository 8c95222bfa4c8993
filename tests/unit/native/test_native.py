"""The native kernels split rows over OpenMP threads or over Python threads with the same
results, and the build cache tells the two apart."""

import ctypes
import shutil
from pathlib import Path

import pytest
import torch

from geomlens import native

needs_cc = pytest.mark.skipif(native.library("rank") is None, reason="no C compiler")


def _rank_with(lib, values, gains, k=16, n_buckets=8):
    n, d_vocab = values.shape
    outs = [torch.empty(n, k), torch.empty(n, k, dtype=torch.int64), torch.empty(n, 1),
            torch.empty(n, 1), torch.empty(n, 1), torch.empty(n, n_buckets, dtype=torch.int64),
            torch.empty(n, n_buckets, dtype=torch.float64)]
    native.run_rows(lambda r0, r1: lib.rank_rows(
        native.ptr(values), native.ptr(gains),
        *map(ctypes.c_int64, (r0, r1, d_vocab, k, n_buckets)), *map(native.ptr, outs)), n, lib)
    return outs


@needs_cc
def test_openmp_and_python_threads_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMLENS_CACHE", str(tmp_path))
    compiler = shutil.which("cc") or shutil.which("gcc")
    source = Path(native.__file__).with_name("rank.c")
    monkeypatch.setenv("GEOMLENS_OPENMP", "0")
    serial = ctypes.CDLL(str(native._build(source, compiler)))
    monkeypatch.setenv("GEOMLENS_OPENMP", "1")
    threaded = ctypes.CDLL(str(native._build(source, compiler)))
    assert not native.parallel(serial)
    assert len(list((tmp_path / "native").glob("rank-*.so"))) == 2  # two cache entries
    g = torch.Generator().manual_seed(0)
    values, gains = torch.randn(13, 1000, generator=g), torch.rand(13, 1000, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for a, b in zip(_rank_with(serial, values, gains), _rank_with(threaded, values, gains)):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(before)
