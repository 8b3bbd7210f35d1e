"""bnlib.plots.style: the shared figure helpers."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnlib.plots.style import finish, plain_log_ticks  # noqa: E402


def _labels(ax):
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text()]


def test_plain_log_ticks_short_and_wide_ranges():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.3, 2.5])
    ax.set_yscale("log")
    plain_log_ticks(ax)
    labels = _labels(ax)
    assert len(labels) >= 4 and all("10^" not in t and "times" not in t for t in labels)
    assert "1" in labels and "2" in labels
    ax.set_ylim(1e-3, 10)
    plain_log_ticks(ax, fmt=lambda v: f"{100 * v:g}%")
    assert _labels(ax) == ["0.1%", "1%", "10%", "100%", "1000%"]
    plt.close(fig)


def test_finish_titles_and_returns_the_figure():
    fig, _ = plt.subplots()
    assert finish(fig, "a title") is fig and fig._suptitle.get_text() == "a title"
    plt.close(fig)
