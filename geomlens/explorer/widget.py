"""The notebook front end: an anywidget whose ES module and CSS are files of this package
(``static/``), synced with the `Explorer` through traitlets and custom messages:

    payload, changed  gzip bytes of the grids (`geomlens.explorer.payload`)
    status            a line the view shows (errors, "recomputing...")
    msg:custom        the view's requests, answered by `Explorer.handle`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import traitlets

from geomlens.errors import require
from geomlens.explorer import export
from geomlens.explorer.view import Explorer

anywidget = require("anywidget", "pip install 'geomlens[explorer]'")


class ExplorerWidget(anywidget.AnyWidget):
    """`geomlens.explore`'s widget; `frame`, `save_html`, `save_png`, `intervene` pass through."""

    _esm = export.STATIC / "explorer.js"
    _css = export.STATIC / "explorer.css"
    payload = traitlets.Bytes(b"").tag(sync=True)
    changed = traitlets.Bytes(b"").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)

    def __init__(self, explorer: Explorer, **kw: Any) -> None:
        super().__init__(**kw)
        self.explorer = explorer
        self.payload = explorer.payload()
        self.on_msg(self._on_view_msg)

    def _on_view_msg(self, _widget, content: dict, _buffers) -> None:
        reply = self.explorer.handle(content)
        if reply["type"] == "changed":
            self.changed = self.explorer.changed_payload()
            self.status = ""
        elif reply["type"] == "error":
            self.status = reply["message"]
        else:
            self.send(reply)

    def intervene(self, target: str, layer: int, method: str = "zero") -> None:
        """Apply an intervention from Python (every lens); the view shows it beside the original."""
        self.explorer.intervene(target, layer, method)
        self.changed = self.explorer.changed_payload()

    def frame(self, *, changed: bool = False):
        return self.explorer.frame(changed=changed)

    def compare(self, **kw):
        """`Explorer.compare`: the original and the changed run's top-1 per block."""
        return self.explorer.compare(**kw)

    def save_html(self, path: str | Path) -> Path:
        return export.save_html(self.explorer, path)

    def save_png(self, path: str | Path, **kw) -> Path:
        return export.save_png(self.explorer, path, **kw)

    def screenshot(self, path: str | Path, **kw) -> Path:
        """The page as headless Chromium draws it (`geomlens.explorer.export.screenshot`)."""
        return export.screenshot(self.explorer, path, **kw)

    def figure(self, **kw):
        return export.figure(self.explorer, **kw)
