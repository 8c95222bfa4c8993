"""The memory planner: its chunk fits the budget it was given, and the analysis's measured peak
(VmHWM of a fresh process, reset before each shape) stays within the bound it states, at the full vocabulary widths of
Llama-3.1-8B (128,256, untied) and Gemma-3 (262,144) with one narrow layer.

The probe fixes glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_=65536): every tensor above
64 KiB is its own mapping, returned to the OS when freed, so the resident peak is the peak of
live tensors (with the default, growing threshold, freed heap memory stays resident and the
peak depends on the order of allocations, not on what the analysis holds)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from geomlens.analysis import AnalyzeConfig
from geomlens.analysis.memory_plan import VOCAB_BUFFERS, plan_analysis
from geomlens.errors import InputError

SHAPES = {"random-llama-3.1-8b": 2 << 30, "random-gemma-3-1b": 3 << 30}
"""Each full-width shape and the free memory it is planned for: 1 < chunk < the batch's 64
positions, with the chunk the largest term of the bound."""

PROBE = textwrap.dedent("""
    import gc, json, sys, time, torch
    from geomlens.analysis import AnalyzeConfig, analyze_tokens
    from geomlens.analysis.memory_plan import plan_analysis
    from geomlens.models.random_shapes import random_model

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        shape, free = arg.split("=")
        m = random_model(shape, n_layers=1, d_model=64)
        seqs = list(torch.randint(0, m.cfg.d_vocab, (2, 32), generator=torch.Generator().manual_seed(0)))
        cfg = AnalyzeConfig(model=shape, n_permutations=15, control_positions=32, n_bootstrap=10,
                            trajectories=False, layer_lens=False, calibrate=False,
                            spearman_positions=8, batch_size=2, compile=False)
        plan = plan_analysis(cfg, d_vocab=m.cfg.d_vocab, d_model=64, batch_positions=64,
                             free_bytes=int(free))
        cfg.position_chunk = plan.position_chunk
        analyze_tokens(m, [seqs[0][:4]], cfg)  # imports and first-call set-up, outside the peak
        gc.collect()
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
        base, start = status("VmRSS:"), time.perf_counter()
        analyze_tokens(m, seqs, cfg)
        print(json.dumps({"shape": shape, "peak": status("VmHWM:") - base,
                          "seconds": time.perf_counter() - start, **plan.as_dict()}))
        del m
        gc.collect()
""")


@pytest.fixture(scope="module")
def peaks() -> dict[str, dict]:
    """The probe's measurement of every shape in `SHAPES`, from one fresh process."""
    out = subprocess.run([sys.executable, "-c", PROBE, *(f"{k}={v}" for k, v in SHAPES.items())],
                         capture_output=True, text=True, check=True, timeout=600,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["shape"]: row for row in rows}


def test_chunk_fits_the_budget():
    cfg = AnalyzeConfig(controls=False)
    plan = plan_analysis(cfg, d_vocab=128_256, d_model=4096, batch_positions=4096,
                         free_bytes=40 << 30)
    assert plan.bound_bytes <= plan.budget_bytes == 20 << 30
    assert plan.position_chunk >= 1 and plan.parts["chunk"] == plan.position_chunk * VOCAB_BUFFERS * 4 * 128_256
    bigger = plan_analysis(cfg, d_vocab=128_256, d_model=4096, batch_positions=4096,
                           free_bytes=80 << 30)
    assert bigger.position_chunk > plan.position_chunk  # more free memory, larger chunks
    with pytest.raises(InputError, match="Not enough free memory"):
        plan_analysis(cfg, d_vocab=262_144, d_model=1152, batch_positions=4096, free_bytes=1 << 30)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_peak_memory_within_the_stated_bound(peaks, shape):
    res = peaks[shape]
    assert res["free_bytes"] == SHAPES[shape]
    assert 1 < res["position_chunk"] < 64  # the budget, not the batch, set the chunk
    assert res["parts"]["chunk"] == max(res["parts"].values())
    assert res["peak"] <= res["bound_bytes"], res
    assert res["peak"] >= 0.5 * res["bound_bytes"], res  # a bound, not a guess far above
