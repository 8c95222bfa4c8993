"""The interactive explorer: one prompt's path through embedding space, read by the distance
lenses beside the logit lens, layer by layer (`explore`).

    import geomlens
    view = geomlens.explore(model, "The capital of France is")
    view                      # the widget (JupyterLab, Notebook 7, VS Code)
    view.frame()              # long DataFrame of what the grid shows
    view.save_html("x.html")  # standalone page, no external URL
    view.save_png("x.png")    # the grid as a matplotlib figure

Modules: `compute` (the cells), `paths` (trajectory panel), `movement` (heads and neurons per
cell), `interventions` (ablation / first-layer K/V), `payload` (bytes for the view), `view`
(`Explorer`: the data and the messages, no front end), `export` (HTML, PNG), `widget`
(the anywidget front end; needs ``pip install 'geomlens[explorer]'``), `static/` (JS, CSS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from geomlens.explorer.view import DEFAULT_LENSES, Explorer

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer


def explore(
    model: HookedTransformer,
    inputs: Any,
    *,
    lenses: Sequence[str] = DEFAULT_LENSES,
    sublayers: bool = False,
    movers_top: int = 5,
    n_near: int = 2,
):
    """The explorer widget for a text, a list of texts or token ids.

    Args:
        model: a HookedTransformer.
        inputs: a string, a list of strings or token ids ([pos], [batch, pos] or a list of
            ints); texts are tokenized with ``model.to_tokens`` (BOS as the model prepends it).
        lenses: layer lenses by name (`geomlens.analysis.layers.LENSES`).
        sublayers: add rows for ``resid_mid``, ``attn_out`` and ``mlp_out`` of every block.
        movers_top: heads/neurons listed per cell.
        n_near: nearest embedding rows per trajectory point.

    Raises a one-line MissingPackageError naming the pip command when anywidget is missing.
    """
    from geomlens.explorer.widget import ExplorerWidget  # optional dependency: anywidget

    return ExplorerWidget(Explorer(model, inputs, lenses=lenses, sublayers=sublayers,
                                   movers_top=movers_top, n_near=n_near))


__all__ = ["Explorer", "explore"]
