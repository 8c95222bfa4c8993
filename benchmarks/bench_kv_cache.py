"""KV-cache bytes and decode speed: standard cache vs first-layer-only cache (thesis §5.2).

    OMP_NUM_THREADS=1 python benchmarks/bench_kv_cache.py [--model smollm2-135m] [--repeats 3]

Greedy decoding with `geomlens.kv.decode` from a corpus prompt, batch 1: the standard cache
(every layer stores its K/V; `LayerMap.none`) and the first-layer cache (only layer 0 stores;
``layers=all``, mode "all", no hooks). Cache bytes are *measured* (Σ numel × element_size over
the cache entries) at several lengths and compared with eqs. 5.17–5.18. Decode time: one
warm-up call each, then ``--repeats`` interleaved rounds; the reported time is the minimum and
the spread is (max − min) / min. Prints one line

    cache_bytes_ratio X decode_tokens_per_s_ratio Y

(both: standard over first-layer) and writes benchmarks/results/kv_cache.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from geomlens.data import load_corpus, tokenize_segments
from geomlens.kv import LayerMap, cache_bytes, decode, expected_cache_bytes
from geomlens.models import load_model


def measured_bytes(model, layer_map: LayerMap, prompt: torch.Tensor, lengths: list[int]) -> dict[int, dict]:
    """Cache bytes after a prefill of each length (decode 1 token: the cache holds ``length``)."""
    out = {}
    for n in lengths:
        res = decode(model, prompt[:, :n], layer_map, max_new_tokens=1)
        out[n] = {"measured": cache_bytes(res.cache), "formula": expected_cache_bytes(model.cfg, layer_map, n)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--new", type=int, default=64, help="generated tokens per decode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kv_cache.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    n = model.cfg.n_layers
    text = " ".join(load_corpus("encyclopedic", n_segments=20)["text"])
    tokens = tokenize_segments(model.tokenizer, [text], max_tokens=max(args.lengths + [args.prompt]))[0][None]
    maps = {"standard": LayerMap.none(n), "first_layer": LayerMap.parse("all", n)}
    sizes = {name: measured_bytes(model, lm, tokens, args.lengths) for name, lm in maps.items()}
    prompt = tokens[:, : args.prompt]
    for lm in maps.values():  # warm-up
        decode(model, prompt, lm, max_new_tokens=4)
    times: dict[str, list[float]] = {name: [] for name in maps}
    for _ in range(args.repeats):
        for name, lm in maps.items():
            t = time.perf_counter()
            decode(model, prompt, lm, max_new_tokens=args.new)
            times[name].append(time.perf_counter() - t)
    best = {name: min(t) for name, t in times.items()}
    tok_s = {name: args.new / best[name] for name in maps}
    spread = {name: (max(t) - min(t)) / min(t) for name, t in times.items()}
    longest = max(args.lengths)
    bytes_ratio = sizes["standard"][longest]["measured"] / sizes["first_layer"][longest]["measured"]
    speed_ratio = tok_s["standard"] / tok_s["first_layer"]
    for name in maps:
        print(f"{name:12s} {tok_s[name]:7.2f} new tokens/s (min of {args.repeats}, spread "
              f"{100 * spread[name]:.1f}%)  cache bytes " +
              ", ".join(f"{k} tok: {v['measured']:,}" for k, v in sizes[name].items()))
    print(f"cache_bytes_ratio {bytes_ratio:.2f} decode_tokens_per_s_ratio {speed_ratio:.3f}")
    result = {
        "settings": {**vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "platform": platform.platform(), "device": "cpu", "n_layers": n,
                     "n_key_value_heads": model.cfg.n_key_value_heads, "d_head": model.cfg.d_head},
        "cache_bytes": sizes, "decode_s": times, "min_decode_s": best, "tokens_per_s": tok_s,
        "spread": spread, "cache_bytes_ratio": bytes_ratio, "decode_tokens_per_s_ratio": speed_ratio,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
