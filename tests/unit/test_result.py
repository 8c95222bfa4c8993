"""`geomlens.result.Result`: the plot / save_figures every result object shares."""

from typing import ClassVar

import matplotlib.pyplot as plt
import pytest

from geomlens.errors import InputError
from geomlens.result import Result, headline_html


class Two(Result):
    FIGURES: ClassVar[dict[str, str]] = {"a": "a.png", "b": "figures/b.png"}

    def __init__(self):
        self.drawn = []

    def _figures(self, names):
        self.drawn.append(list(names))
        figs = {}
        for name in self.FIGURES:  # draws both, as a result whose figures come in pairs
            fig, ax = plt.subplots()
            ax.set_title(name)
            figs[name] = fig
        return figs


def test_plot_one_name_is_a_figure_and_extras_are_closed():
    result = Two()
    before = set(plt.get_fignums())
    fig = result.plot("b")
    assert isinstance(fig, plt.Figure) and fig.axes[0].get_title() == "b"
    assert set(plt.get_fignums()) - before == {fig.number}  # the extra "a" was closed
    figs = result.plot()
    assert list(figs) == ["a", "b"] and result.drawn == [["b"], ["a", "b"]]
    with pytest.raises(InputError, match="no figure 'c'.*\\['a', 'b'\\]"):
        result.plot("c")
    plt.close("all")


def test_save_figures_writes_each_to_its_file(tmp_path):
    written = Two().save_figures(tmp_path)
    assert written == ["a.png", "figures/b.png"]
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in written)
    assert plt.get_fignums() == []  # saved figures are closed


def test_headline_html_escapes_the_text():
    page = headline_html("<b>x</b>", "a < b", tables=["result.t"], figures=["f"])
    assert page.startswith("<div><b>x</b><br><pre>a &lt; b</pre>") and "<code>result.t</code>" in page
