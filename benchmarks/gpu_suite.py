"""The GPU suite: one prepared run (<= 10 min on one H100/H200) of the measurements that need a GPU.

    python benchmarks/gpu_suite.py --out DIR             # on a GPU (benchmarks/gpu_suite.sh)
    python benchmarks/gpu_suite.py --dry-run --out DIR   # CPU, tiny shapes, seconds (tests)

Sections (each in its own try block; DIR/gpu_suite.json is rewritten after every one, so a
failure or a timeout loses only what had not finished):

analysis   random-weight Llama-3.2-1B and Llama-3.1-8B shapes (`geomlens.models.random_shapes`),
           forward in bfloat16, distances/ranks in float32. tokens/s = positions /
           min time(analyze_tokens: forward + 6 scores vs p, NDCG@1/10/100/full, JSD, top-1,
           top-10; ln_final vs W_E; no controls, Spearman, calibration or layer lens);
           ratio = that time / min time(model(tokens)) on the same batch. The position chunk
           comes from the memory planner (`geomlens.analysis.memory_plan`); the peak CUDA memory
           is recorded beside the planner's bound.
explorer   `geomlens.explorer.Explorer` (the compute behind `geomlens.explore`) on 128 tokens of
           the 8B shape (float32 weights), when the package has it.
heads      training-step time of KNN heads / linear (`benchmarks/bench_heads.make_step`: micro-70m,
           vocab 49,152, batch 32 x 512, bf16 autocast) with the distance op's matmuls at float32,
           TF32 and bf16 (`geomlens.heads.distance.set_matmul_precision`).
kv         greedy decode tokens/s after an 8,192-token prompt: first-layer K/V cache vs the
           standard cache (`geomlens.kv.decode`), random-weight shapes in bfloat16.

Times: CUDA-synchronized wall clock, minimum of --repeats after a warm-up, spread recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> dict:
    """Warm-up once, then ``repeats`` synchronized runs: min / median / max / all seconds."""
    fn()
    ts = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return {"min": min(ts), "median": statistics.median(ts), "max": max(ts), "all": ts}


def free_cuda(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def environment(device: str) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device,
           "cuda": torch.version.cuda, "load_avg": os.getloadavg()}
    try:
        import transformer_lens

        env["transformer_lens"] = getattr(transformer_lens, "__version__", "unknown")
    except Exception as exc:  # noqa: BLE001
        env["transformer_lens"] = f"import failed: {exc}"
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30,
                   capability=f"{p.major}.{p.minor}")
    return env


# -- sections -------------------------------------------------------------------------------
def bench_analysis(a, device: str) -> dict:
    from geomlens.analysis import AnalyzeConfig, analyze_tokens
    from geomlens.analysis.memory_plan import plan_analysis
    from geomlens.models.random_shapes import random_model

    out = {}
    for shape in a.shapes:
        log(f"analysis: {shape}")
        free_cuda(device)
        model = random_model(shape, device=device, dtype=torch.bfloat16, n_layers=a.layers,
                             d_model=a.d_model)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, model.cfg.d_vocab, (a.n_seq, a.seq_len), generator=g).to(device)
        seqs = list(tokens)
        cfg = AnalyzeConfig(model=shape, hidden=["ln_final"], target=["W_E"], spearman=False,
                            controls=False, trajectories=False, layer_lens=False, calibrate=False,
                            batch_size=a.n_seq, compile=a.compile, device=device, dtype="bfloat16")
        plan = plan_analysis(cfg, d_vocab=model.cfg.d_vocab, d_model=model.cfg.d_model,
                             batch_positions=a.n_seq * a.seq_len, device=device,
                             forward_dtype=torch.bfloat16)
        cfg.position_chunk = plan.position_chunk
        res = {"n_params": sum(p.numel() for p in model.parameters()), "batch": [a.n_seq, a.seq_len],
               "plan": plan.as_dict(), "compile": a.compile}
        with torch.no_grad():
            res["forward_s"] = timed(lambda: model(tokens), device, a.repeats)
            free_cuda(device)
            res["analysis_s"] = timed(lambda: analyze_tokens(model, seqs, cfg), device, a.repeats)
        if device.startswith("cuda"):
            res["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
            res["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
        n_pos = a.n_seq * a.seq_len
        res["tokens_per_s"] = n_pos / res["analysis_s"]["min"]
        res["forward_tokens_per_s"] = n_pos / res["forward_s"]["min"]
        res["ratio"] = res["analysis_s"]["min"] / res["forward_s"]["min"]
        log(f"  {shape}: {res['tokens_per_s']:.0f} tok/s, ratio {res['ratio']:.2f}, "
            f"forward {res['forward_s']['min']:.3f}s, analysis {res['analysis_s']['min']:.3f}s")
        out[shape] = res
        del model
    return out


def bench_explorer(a, device: str) -> dict:
    """`geomlens.explorer.Explorer` (what `geomlens.explore` computes before its widget) on 128
    tokens of one sequence: the grid of lenses x layers, movers, the trajectory."""
    try:
        from geomlens.explorer import Explorer
    except ImportError as exc:
        return {"status": "not available", "reason": f"geomlens.explorer is not in this tree ({exc})"}
    from geomlens.models.random_shapes import random_model

    free_cuda(device)
    # float32 weights: the explorer's tables go through numpy, which has no bfloat16
    model = random_model(a.explorer_shape, device=device, dtype=torch.float32, n_layers=a.layers,
                         d_model=a.d_model)
    tokens = torch.randint(0, model.cfg.d_vocab, (a.explorer_tokens,),
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = timed(lambda: Explorer(model, tokens), device, a.repeats)
    res = {"shape": a.explorer_shape, "tokens": a.explorer_tokens, "weights": "float32",
           "seconds": t, "tokens_per_s": a.explorer_tokens / t["min"]}
    if device.startswith("cuda"):
        res["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    log(f"  explorer: {t['min']:.2f}s for {a.explorer_tokens} tokens")
    return res


def bench_heads(a, device: str) -> dict:
    from bench_heads import make_step

    from geomlens.heads.matmul_precision import use_matmul_precision

    out: dict = {"settings": {"model": a.heads_model, "vocab": a.heads_vocab,
                              "batch": [a.heads_batch, a.heads_seq], "rounds": a.heads_rounds}}
    times: dict[str, list[float]] = {}
    steps = {}
    for head in ["linear", *a.heads]:
        for precision in (["float32"] if head == "linear" else a.precisions):
            steps[f"{head}/{precision}"] = (precision, make_step(
                head, model=a.heads_model, vocab=a.heads_vocab, batch=a.heads_batch,
                seq=a.heads_seq, device=device))
    for name, (precision, step) in steps.items():  # warm-up
        with use_matmul_precision(precision):
            for _ in range(2):
                step()
        times[name] = []
    for r in range(a.heads_rounds):  # interleaved rounds
        for name, (precision, step) in steps.items():
            with use_matmul_precision(precision):
                times[name].append(step()[0])
    lin = min(times["linear/float32"])
    out["min_step_s"] = {k: min(v) for k, v in times.items()}
    out["ratio_vs_linear"] = {k: min(v) / lin for k, v in times.items()}
    out["spread"] = {k: (max(v) - min(v)) / min(v) for k, v in times.items()}
    for k, v in out["ratio_vs_linear"].items():
        log(f"  heads {k}: {v:.3f}x linear ({out['min_step_s'][k] * 1e3:.1f} ms)")
    return out


def bench_kv(a, device: str) -> dict:
    from geomlens.kv import LayerMap, cache_bytes, decode
    from geomlens.models.random_shapes import random_model

    out = {}
    for shape in a.kv_shapes:
        log(f"kv: {shape}")
        free_cuda(device)
        model = random_model(shape, device=device, dtype=torch.bfloat16, n_layers=a.layers,
                             d_model=a.d_model)
        n = model.cfg.n_layers
        prompt = torch.randint(0, model.cfg.d_vocab, (1, a.kv_context),
                               generator=torch.Generator().manual_seed(0)).to(device)
        maps = {"standard": LayerMap.none(n), "first_layer": LayerMap.parse("all", n)}
        res: dict = {"context": a.kv_context, "new_tokens": a.kv_new}
        for name, lm in maps.items():
            # prefill + 1 token, then prefill + kv_new tokens: the difference is the decode time
            prefill = timed(lambda lm=lm: decode(model, prompt, lm, max_new_tokens=1), device,
                            a.repeats)
            full = timed(lambda lm=lm: decode(model, prompt, lm, max_new_tokens=1 + a.kv_new),
                         device, a.repeats)
            r = decode(model, prompt[:, :64], lm, max_new_tokens=1)
            per_token_bytes = cache_bytes(r.cache) / 64
            dt = full["min"] - prefill["min"]
            # None when the decode time is below the timing noise (a loaded CPU, tiny shapes)
            rate = a.kv_new / dt if dt > 0 else None
            res[name] = {"prefill_s": prefill, "prefill_plus_decode_s": full,
                         "decode_tokens_per_s": rate,
                         "cache_bytes_at_context": per_token_bytes * a.kv_context}
            log(f"  {shape} {name}: {rate and round(rate, 1)} tok/s decode at {a.kv_context} context")
        rates = [res[k]["decode_tokens_per_s"] for k in ("first_layer", "standard")]
        res["decode_tokens_per_s_ratio_first_layer_over_standard"] = (
            rates[0] / rates[1] if None not in rates else None)
        res["cache_bytes_ratio_standard_over_first_layer"] = (
            res["standard"]["cache_bytes_at_context"] / res["first_layer"]["cache_bytes_at_context"])
        out[shape] = res
        del model
    return out


def bench_analysis_compiled(a, device: str) -> dict:
    """The analysis of the last shape again, fused by torch.compile (compiled in the warm-up)."""
    b = argparse.Namespace(**{**vars(a), "shapes": a.shapes[-1:], "compile": True})
    return bench_analysis(b, device)


SECTIONS = {"analysis": bench_analysis, "heads": bench_heads, "kv": bench_kv,
            "explorer": bench_explorer, "analysis_compiled": bench_analysis_compiled}


def settings(dry_run: bool) -> dict:
    """Sizes of the full suite (GPU) and of the dry run (CPU, seconds)."""
    if dry_run:
        return dict(shapes=["random-llama-3.2-1b"], layers=2, d_model=64, n_seq=2, seq_len=16,
                    repeats=1, compile=False, explorer_shape="random-llama-3.2-1b", explorer_tokens=4,
                    heads_model="micro-1m", heads_vocab=512, heads_batch=2, heads_seq=16,
                    heads_rounds=1, heads=["neg_dist"], precisions=["float32", "bf16"],
                    kv_shapes=["random-llama-3.2-1b"], kv_context=32, kv_new=16)
    return dict(shapes=["random-llama-3.2-1b", "random-llama-3.1-8b"], layers=None, d_model=None,
                n_seq=8, seq_len=512, repeats=3, compile=False, explorer_shape="random-llama-3.1-8b",
                explorer_tokens=128,
                heads_model="micro-70m", heads_vocab=49152, heads_batch=32, heads_seq=512,
                heads_rounds=5, heads=["neg_dist", "gaussian"],
                precisions=["float32", "tf32", "bf16"],
                kv_shapes=["random-llama-3.2-1b", "random-llama-3.1-8b"], kv_context=8192, kv_new=32)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for gpu_suite.json")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes (seconds)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated, in order (default: all; the dry run skips "
                         "analysis_compiled)")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="skip sections that would start after this many seconds")
    ap.add_argument("--compile", action="store_true", help="analysis with torch.compile")
    args = ap.parse_args(argv)
    device = "cpu" if args.dry_run else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.dry_run:  # AdamW's tiny second moments are denormal on the CPU: 10x slower steps
        torch.set_flush_denormal(True)
    a = argparse.Namespace(**settings(args.dry_run))
    a.compile = args.compile or a.compile
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"mode": "dry-run" if args.dry_run else "full", "settings": vars(a),
              "environment": environment(device), "sections": {}}
    if device == "cpu" and not args.dry_run:
        result["note"] = "no CUDA device: the full suite needs a GPU; nothing was measured"
        (out_dir / "gpu_suite.json").write_text(json.dumps(result, indent=2))
        log(result["note"])
        return result
    names = args.sections.split(",")
    if args.dry_run and args.sections == ",".join(SECTIONS):
        names.remove("analysis_compiled")
    for name in names:
        if time.perf_counter() - T0 > args.budget_s:
            result["sections"][name] = {"status": "skipped", "reason": "time budget spent"}
            continue
        t = time.perf_counter()
        try:
            res = SECTIONS[name](a, device)
            res = res if "status" in res else {"status": "ok", **res}
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the rest
            traceback.print_exc()
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        res["section_s"] = time.perf_counter() - t
        result["sections"][name] = res
        (out_dir / "gpu_suite.json").write_text(json.dumps(result, indent=2, default=str))
        log(f"section {name}: {res['status']} in {res['section_s']:.1f}s")
    return result


if __name__ == "__main__":
    main()
