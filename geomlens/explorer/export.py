"""Exports of an `Explorer`: standalone HTML (the widget's own module and CSS inlined, the
payload as base64; no external URL) and a PNG of the grid drawn with matplotlib."""

from __future__ import annotations

import base64
import json
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from geomlens.errors import InputError
from geomlens.explorer.compute import MEASURES
from geomlens.explorer.view import Explorer

STATIC = resources.files("geomlens.explorer") / "static"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>geomlens explorer: {title}</title>
<style>{css}</style></head>
<body><div id="geomlens-explorer"></div>
<script type="application/json" id="geomlens-data">{data}</script>
<script type="module">
const d = JSON.parse(document.getElementById("geomlens-data").textContent);
const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const state = {{ payload: bytes(d.payload), changed: bytes(d.changed), status: "" }};
const model = {{ standalone: true, get: (k) => state[k], set: (k, v) => {{ state[k] = v; }},
  save_changes() {{}}, on() {{}}, off() {{}}, send() {{}} }};
const url = URL.createObjectURL(new Blob([d.esm], {{ type: "text/javascript" }}));
const mod = await import(url);
await mod.default.render({{ model, el: document.getElementById("geomlens-explorer") }});
document.body.dataset.ready = "1";
</script></body></html>
"""


def esm_source() -> str:
    return (STATIC / "explorer.js").read_text(encoding="utf-8")


def css_source() -> str:
    return (STATIC / "explorer.css").read_text(encoding="utf-8")


def html(ex: Explorer) -> str:
    """The standalone page (module doc)."""
    data = json.dumps({"payload": base64.b64encode(ex.payload()).decode(),
                       "changed": base64.b64encode(ex.changed_payload()).decode(),
                       "esm": esm_source()})
    title = ex.model.cfg.model_name.replace("<", "")
    return PAGE.format(title=title, css=css_source(), data=data.replace("</", "<\\/"))


def save_html(ex: Explorer, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(html(ex), encoding="utf-8")
    return path


def _cell_values(ex: Explorer, seq: int, lens: str, color: str) -> tuple[np.ndarray, np.ndarray]:
    g = ex.grids[seq]
    li = g.lenses.index(lens)
    measure = {"rank_final": g.rank_final[..., li], "rank_next": g.rank_next[..., li],
               "ndcg@10": g.ndcg[..., li], "jsd": g.jsd[..., li], "step_norm": g.step_norm,
               "attn_share": g.attn_share}[color].astype(float)
    if color.startswith("rank"):
        measure = -np.log10(np.where(measure < 0, np.nan, measure) + 1)  # higher = better
    elif color == "jsd":
        measure = -measure
    return measure, g.top_ids[:, :, li, 0]


def figure(ex: Explorer, *, seq: int = 0, lens: str | None = None, color: str = "rank_final"):
    """The grid as a matplotlib Figure: each cell's top-1 token, coloured by ``color``."""
    lens = lens or ex.lenses[0]
    if lens not in ex.lenses or color not in MEASURES:
        raise InputError(f"lens must be one of {ex.lenses} and color one of {MEASURES}")
    values, top1 = _cell_values(ex, seq, lens, color)
    g = ex.grids[seq]
    n_row, n_pos = top1.shape
    # a Figure outside pyplot: returned, shown once by the notebook, never kept by pyplot
    fig = Figure(figsize=(1.0 + 0.62 * n_pos, 0.8 + 0.26 * n_row))
    ax = fig.subplots()
    ax.imshow(values[::-1], aspect="auto", cmap="Blues", interpolation="nearest")
    text = ex.labels(np.unique(top1).tolist())
    label = dict(zip(np.unique(top1).tolist(), text))
    for r in range(n_row):
        for p in range(n_pos):
            ax.text(p, n_row - 1 - r, repr(label[int(top1[r, p])])[1:-1][:8], ha="center",
                    va="center", fontsize=6)
    ax.set_xticks(range(n_pos), [repr(t)[1:-1][:8] for t in ex.labels(g.token_ids.tolist())],
                  rotation=90, fontsize=6)
    ax.set_yticks(range(n_row), [f"{layer} {h.split('.')[-1][5:]}" for layer, h in g.rows[::-1]], fontsize=6)
    ax.set_title(f"{ex.model.cfg.model_name}: top-1 of the {lens} lens, colour: {color}", fontsize=8)
    with warnings.catch_warnings():  # tokens in scripts the default font lacks draw as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
    return fig


def save_png(ex: Explorer, path: str | Path, **kw) -> Path:
    fig = figure(ex, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, dpi=150)
    return Path(path)


CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def screenshot(ex: Explorer, path: str | Path, *, cell: tuple[int, int] | None = None,
               lens: str | None = None, width: int = 1400, chromium: str | None = None) -> Path:
    """A PNG of the standalone page as headless Chromium draws it (Debian's ``chromium``
    driven by playwright's Python API, which downloads nothing); ``cell`` = (layer, pos) to
    click first so that its detail shows."""
    import shutil
    import tempfile

    from geomlens.errors import require

    sync_api = require("playwright.sync_api", "pip install playwright  (and apt-get install chromium)")
    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise InputError("screenshot needs a Chromium binary: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="geomlens-explorer-") as tmp:
        page_path = save_html(ex, Path(tmp) / "explorer.html")
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=exe, headless=True,
                args=list(CHROMIUM_FLAGS), viewport={"width": width, "height": 900})
            page = ctx.new_page()
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            if lens:
                page.select_option("select[data-control=lens]", lens)
            if cell:
                page.click(f"table[data-grid=original] td.gl-cell[data-layer='{cell[0]}']"
                           f"[data-hook='resid_post'][data-pos='{cell[1]}']")
            page.screenshot(path=str(path), full_page=True)
            ctx.close()
    return Path(path)
