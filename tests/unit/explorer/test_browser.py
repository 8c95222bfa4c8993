"""The exported page in a real browser (headless Chromium through playwright's Python API):
no console error, the DOM shows what frame() holds, a cell's detail lists that cell's tokens.

Skips with a reason only outside CI (env CI unset) when chromium or playwright is missing; in
CI a missing browser fails the test (.ci/run installs Debian's chromium)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import build_model

from geomlens.explorer import export
from geomlens.explorer.view import Explorer

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("GEOMLENS_SCREENSHOTS", tempfile.gettempdir()))


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: chromium or playwright is missing "
                        "(apt-get install -y chromium; pip install -e '.[dev]')")
        pytest.skip("headless chromium or playwright not installed (and not in CI)")
    return path


@pytest.fixture(scope="module")
def page_of():
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="gl-chromium-"),
                                                    executable_path=exe, headless=True, args=FLAGS)

        def open_page(path):
            page = ctx.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "blob:", "data:")) else None)
            page.goto(Path(path).resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            return page, errors

        yield open_page
        ctx.close()


@pytest.fixture(scope="module")
def ex():
    model = build_model()
    return Explorer(model, torch.stack([torch.tensor([3, 17, 5, 42, 8, 8, 21, 0, 33, 12]),
                                        torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]))


def test_page_shows_frame(ex, page_of, tmp_path):
    page, errors = page_of(export.save_html(ex, tmp_path / "explorer.html"))
    df = ex.frame()
    last = df[(df.seq == 0) & (df.layer == df.layer.max()) & (df["rank"] == 0)]
    for lens in ex.lenses:
        page.select_option("select[data-control=lens]", lens)
        cells = page.query_selector_all(f"table[data-grid=original] td.gl-cell[data-layer='{df.layer.max()}']")
        shown = sorted((int(c.get_attribute("data-pos")), c.get_attribute("data-token"),
                        int(c.get_attribute("data-token-id"))) for c in cells)
        want = last[last.lens == lens].sort_values("pos")
        assert shown == list(zip(want.pos, want.token, want.token_id)), lens
    page.select_option("select[data-control=lens]", "logit")
    page.click("table[data-grid=original] td.gl-cell[data-layer='0'][data-pos='4']")
    cell = df[(df.seq == 0) & (df.layer == 0) & (df.pos == 4)]
    for lens in ex.lenses:
        tds = page.query_selector_all(f".gl-detail table.gl-topk[data-lens='{lens}'] td.gl-detail-token")
        shown = [(t.get_attribute("data-token"), int(t.get_attribute("data-token-id"))) for t in tds]
        want = cell[cell.lens == lens].sort_values("rank")
        assert shown == list(zip(want.token, want.token_id)), lens
    assert page.query_selector("svg.gl-path polyline") is not None
    page.select_option("select[data-control=sequence]", "1")
    first = page.query_selector("table[data-grid=original] th.gl-input[data-pos='0']").inner_text()
    assert first == "1"
    page.screenshot(path=str(SHOTS / "geomlens-explorer-test.png"), full_page=True)
    assert (SHOTS / "geomlens-explorer-test.png").stat().st_size > 10_000
    assert errors == []


def test_page_shows_the_changed_run(ex, page_of, tmp_path):
    ex.intervene("attn", 1, "zero")
    page, errors = page_of(export.save_html(ex, tmp_path / "changed.html"))
    df = ex.frame(changed=True)
    last = df[(df.seq == 0) & (df.layer == 1) & (df["rank"] == 0) & (df.lens == "logit")].sort_values("pos")
    cells = page.query_selector_all("table[data-grid=changed] td.gl-cell[data-layer='1'][data-hook='resid_post']")
    assert [c.get_attribute("data-token") for c in sorted(cells, key=lambda c: int(c.get_attribute("data-pos")))] \
        == last.token.tolist()
    base = ex.frame()
    base = base[(base.seq == 0) & (base.layer == 1) & (base["rank"] == 0) & (base.lens == "logit")].sort_values("pos")
    n_diff = int((base.token_id.to_numpy() != last.token_id.to_numpy()).sum())
    assert len(page.query_selector_all("table[data-grid=changed] td.gl-diff[data-layer='1']")) == n_diff
    assert page.query_selector("table[data-grid=difference]") is not None
    assert errors == []
    ex.handle({"type": "reset"})
