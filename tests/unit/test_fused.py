"""`geomlens.fused.Fused`, the one compile-with-eager-fallback helper: which calls compile, the
fallback on a compiler failure (once, one warning), and the strict mode that raises."""

import copy
import logging

import pytest
import torch

from geomlens import fused as fused_module
from geomlens.fused import Fused


def _double(x):
    return x * 2


class _Compiler:
    """Stands in for torch.compile: records the calls; ``fail`` makes the compiled call raise."""

    def __init__(self, fail=False):
        self.fail, self.compiled, self.calls = fail, [], 0

    def __call__(self, fn, **kwargs):
        self.compiled.append((fn, kwargs))

        def run(*args):
            self.calls += 1
            if self.fail:
                raise RuntimeError("no C++ compiler")
            return fn(*args)
        return run


@pytest.fixture
def compiler(monkeypatch):
    fake = _Compiler()
    monkeypatch.setattr(fused_module.torch, "compile", fake)
    return fake


def test_modes_and_the_size_threshold(compiler):
    x = torch.ones(3)
    assert torch.equal(Fused("eager")(_double, x), x * 2) and compiler.calls == 0
    auto = Fused("auto", min_elements=10)
    auto(_double, x, n_elements=3)  # below the threshold: eager
    assert compiler.calls == 0
    auto(_double, x, n_elements=10)
    auto(_double, x, n_elements=12)
    assert compiler.calls == 2 and len(compiler.compiled) == 1  # compiled once, reused
    Fused("compile", min_elements=10)(_double, x, n_elements=3)  # "compile": always
    assert compiler.calls == 3
    assert Fused(True).mode == "auto" and Fused(False).mode == "eager"
    with pytest.raises(ValueError, match="mode"):
        Fused("fast")


def test_compiler_failure_falls_back_once_with_one_warning(compiler, caplog):
    compiler.fail = True
    runner = Fused("auto")
    with caplog.at_level(logging.WARNING, logger="geomlens.fused"):
        for _ in range(3):
            assert torch.equal(runner(_double, torch.ones(2)), torch.full((2,), 2.0))
    assert not runner.enabled and runner.failed
    assert compiler.calls == 1  # never tried again
    assert len([r for r in caplog.records if "running eagerly" in r.getMessage()]) == 1


def test_strict_mode_raises(compiler):
    compiler.fail = True
    with pytest.raises(RuntimeError, match="no C"):
        Fused("compile")(_double, torch.ones(2))


def test_copies_keep_the_settings_not_the_compiled_functions(compiler):
    runner = Fused("auto", min_elements=5, fullgraph=True)
    runner(_double, torch.ones(8), n_elements=8)
    clone = copy.deepcopy(runner)
    assert (clone.mode, clone.min_elements, clone.fullgraph) == ("auto", 5, True)
    assert clone._compiled == {} and runner._compiled
