"""Exports: standalone HTML with no external URL, the PNG figure, the widget front end."""

import importlib
import re
import sys

import matplotlib
import pytest
import torch
from helpers import build_model

from geomlens.errors import MissingPackageError
from geomlens.explorer import export
from geomlens.explorer.view import Explorer

TOKENS = torch.tensor([3, 17, 5, 42, 8, 8, 21, 0])


@pytest.fixture(scope="module")
def ex():
    return Explorer(build_model(), TOKENS, sublayers=True)


def test_html_is_self_contained(ex, tmp_path):
    page = export.save_html(ex, tmp_path / "x.html").read_text()
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>\\]*", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # an XML namespace name, never fetched
    assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=", page)
    assert "export default { render }" in page and ".geomlens-explorer" in page
    assert "</script" not in page.split('id="geomlens-data">', 1)[1].split("</script>", 1)[0]


def test_png_and_figure(ex, tmp_path):
    path = export.save_png(ex, tmp_path / "x.png", lens="distance_raw", color="ndcg@10")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = export.figure(ex, color="rank_next")
    assert isinstance(fig, matplotlib.figure.Figure)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {str(i) for i in ex.grids[0].top_ids[-1, :, 0, 0]} <= texts
    with pytest.raises(ValueError, match="color"):
        export.figure(ex, color="beauty")


def test_widget_messages(ex, monkeypatch):
    from geomlens.explorer.widget import ExplorerWidget

    w = ExplorerWidget(ex)
    assert w.payload == ex.payload() and w.changed == b""
    w._on_view_msg(w, {"type": "intervene", "target": "mlp", "layer": 0, "method": "mean",
                       "lens": "logit"}, [])
    assert w.changed and w.status == "" and ex.changed_label == "mean ablation of block 0 mlp"
    w._on_view_msg(w, {"type": "intervene", "target": "mlp", "layer": 9}, [])
    assert "outside 0..1" in w.status
    sent = []
    monkeypatch.setattr(w, "send", sent.append)
    w._on_view_msg(w, {"type": "movers", "seq": 0, "layer": 1, "pos": 2}, [])
    assert sent[0]["type"] == "movers" and sent[0]["data"]["rows"]
    w._on_view_msg(w, {"type": "reset"}, [])
    assert w.changed == b""


def test_missing_anywidget_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "anywidget", None)
    monkeypatch.delitem(sys.modules, "geomlens.explorer.widget", raising=False)
    with pytest.raises(MissingPackageError) as err:
        importlib.import_module("geomlens.explorer.widget")
    assert "pip install 'geomlens[explorer]'" in str(err.value) and "\n" not in str(err.value)
