"""Regenerate docs/images/explorer.png (the README's picture of the explorer): smollm2-135m on
one sentence, the logit lens, the detail of one cell, drawn by headless Chromium.

    python scripts/explorer_screenshot.py [--out docs/images/explorer.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geomlens
from geomlens.explorer import Explorer, export

TEXT = "The capital of France is Paris, and the river that runs through it is the"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images/explorer.png"))
    args = ap.parse_args()
    model = geomlens.load_model("smollm2-135m", device="cpu")
    ex = Explorer(model, TEXT)
    n = len(ex.sequences[0])
    export.screenshot(ex, args.out, cell=(model.cfg.n_layers - 8, n - 1), width=1500)
    sys.stdout.write(f"{args.out}\n")


if __name__ == "__main__":
    main()
