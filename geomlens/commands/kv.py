"""`geomlens kv`: first-layer-only K/V (thesis §5.2) on a pretrained model: clean vs patched
loss per domain with bootstrap CIs, optional per-layer and "layers >= m" sweeps, and the cache
sizes of eqs. 5.17-5.18. Flags: `geomlens.kv.config.KVConfig`."""

from __future__ import annotations

from pathlib import Path

KIND = "kv"


def headline(summary: dict, run_dir: Path) -> str:
    def ci(name: str) -> str:
        low, high = summary.get(f"{name}_low"), summary.get(f"{name}_high")
        extra = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
        return f"{summary[name]:.4f}{extra}"

    lines = [f"{summary['model']}: layers {summary['layers']} ({summary['mode']}), layer_types "
             f"{summary['layer_types']}, {summary['n_predicted_tokens']} predicted tokens",
             f"clean loss   {ci('clean_loss')} nats",
             f"patched loss {ci('patched_loss')} nats"]
    if "delta_loss" in summary:
        lines.append(f"delta        {ci('delta_loss')} nats")
    lines.append(f"per domain: {run_dir / 'losses.csv'}")
    return "\n".join(lines)
