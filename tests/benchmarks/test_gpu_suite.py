"""The GPU suite's CPU dry run: every section runs on tiny shapes and reports its numbers."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path),
                           "--dry-run"], capture_output=True, text=True, timeout=600,
                          env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
                               "PY": sys.executable, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert (tmp_path / "env.txt").exists() and res["mode"] == "dry-run"
    sec = res["sections"]
    assert set(sec) == {"analysis", "explorer", "heads", "kv"}
    assert sec["explorer"]["status"] in ("ok", "not available")
    for name in ("analysis", "heads", "kv"):
        assert sec[name]["status"] == "ok", sec[name]
    a = sec["analysis"]["random-llama-3.2-1b"]
    assert a["tokens_per_s"] > 0 and a["ratio"] == a["analysis_s"]["min"] / a["forward_s"]["min"]
    assert a["plan"]["position_chunk"] >= 1
    h = sec["heads"]["ratio_vs_linear"]
    assert h["linear/float32"] == 1.0 and {"neg_dist/float32", "neg_dist/bf16"} <= set(h)
    kv = sec["kv"]["random-llama-3.2-1b"]
    for name in ("standard", "first_layer"):  # None: decode time below the timing noise
        rate = kv[name]["decode_tokens_per_s"]
        full, prefill = kv[name]["prefill_plus_decode_s"]["min"], kv[name]["prefill_s"]["min"]
        assert rate == 16 / (full - prefill) if full > prefill else rate is None
    # two layers: the first-layer cache holds half of the standard one
    assert kv["cache_bytes_ratio_standard_over_first_layer"] == 2.0
