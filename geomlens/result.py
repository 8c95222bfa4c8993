"""`Result`: what every thread's result object shares in a notebook (style rule 21).

A thread's result (`geomlens.analysis.result.AnalysisResult`, `geomlens.ablation.result.
AblationResult`, `geomlens.kv.result.KVResult`, `geomlens.training.result.TrainingResult`, the
projection results) holds its tables as DataFrames, and its config and model info, so that
nothing is asked for twice. It draws its figures in
``_figures(names)``; this base gives all of them the same ``plot``:

    result.plot()               # {name: Figure} for every figure (the Figure when only one)
    result.plot("delta_loss")   # one Figure (shown inline); nothing is written to disk
    result.save(run_dir)        # the files the CLI writes (each thread's own ``save``)

and `headline_html`, the compact HTML block of a ``_repr_html_``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt

from geomlens.errors import InputError
from geomlens.figures import save_figure


class Result:
    """Base of the notebook result objects: ``plot(*names)`` over ``figure_names()``."""

    FIGURES: ClassVar[dict[str, str]] = {}
    """Figure name -> the file (relative to a run directory) ``save`` writes it to."""

    def figure_names(self) -> list[str]:
        """The names `plot` takes for this result (default: every name in ``FIGURES``)."""
        return list(self.FIGURES)

    def _figures(self, names: list[str]) -> dict[str, plt.Figure]:
        """Draw (at least) the figures ``names``; extra ones are closed by `plot`."""
        raise NotImplementedError

    def _drawn(self, names: Sequence[str]) -> dict[str, plt.Figure]:
        """{name: Figure} for ``names`` (none = every one), checked against `figure_names`."""
        available = self.figure_names()
        bad = [n for n in names if n not in available]
        if bad:
            raise InputError(f"plot: no figure {bad[0]!r} for this result; choose from {available}")
        wanted = list(names) or available
        figs = self._figures(wanted)
        for name in [n for n in figs if n not in wanted]:
            plt.close(figs.pop(name))
        return {n: figs[n] for n in wanted}

    def plot(self, *names: str) -> plt.Figure | dict[str, plt.Figure]:
        """Figures of the result (`figure_names`): one name -> that Figure; several -> {name:
        Figure}; none -> every figure, the Figure itself when the result has only one. Nothing
        is written to disk."""
        figs = self._drawn(names)
        return next(iter(figs.values())) if len(figs) == 1 else figs

    def save_figures(self, run_dir: str | Path) -> list[str]:
        """Draw every figure, write each to its ``FIGURES`` file under ``run_dir`` (PNG, through
        `geomlens.figures.save_figure`) and return those relative paths, in order."""
        figs = self._drawn(())
        written = []
        for name, fig in figs.items():
            save_figure(fig, Path(run_dir) / self.FIGURES[name])
            written.append(self.FIGURES[name])
        return written


def headline_html(title: str, text: str, *, tables: Sequence[str], figures: Sequence[str]) -> str:
    """The compact HTML of a result: a bold first line (``title``, may hold HTML), the headline
    ``text`` in a <pre> block (escaped), and where the full tables and the figures are."""
    tables_html = ", ".join(f"<code>{html.escape(t)}</code>" for t in tables)
    return (f"<div>{title}<br><pre>{html.escape(text)}</pre>Tables: {tables_html}; figures: "
            f"<code>result.plot(name)</code> for {html.escape(', '.join(figures))}</div>")
