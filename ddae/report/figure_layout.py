"""Layout shared by the paper's Figures 2-6 (`ddae.report.figures`): style, panels, legends
under the axes, the data-source footer, and saving to PNG and PDF.

Every figure says where its numbers come from in a footer under it; legends sit under their
axes, where they cannot cover a point or a reference line. Constrained layout reserves room for
both, but it measures text before matplotlib wraps it and places a legend anchored below the
axes relative to the axes' own height, so a tall legend could still run into a wrapped footer:
`save_figure` wraps the footer itself and grows the figure until no legend meets it.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

log = logging.getLogger(__name__)

PathLike = str | Path
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}
COLORS = plt.get_cmap("tab10").colors
NOT_RUN = "(not run)"
FOOTER_FONT_SIZE = 7
# a footer character's mean width in font sizes (DejaVu Sans, generous): wraps lines to fit
_FOOTER_CHARACTER_WIDTH = 0.62
_FOOTER_GAP_POINTS = 4  # free space between the lowest legend and the footer


@contextmanager
def figure_panels(
    ncols: int, width: float = 4.2, height: float = 3.4
) -> Iterator[tuple[Any, list]]:
    """A figure of `ncols` panels side by side (each `width` × `height` inches), closed after."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, max(ncols, 1), figsize=(width * max(ncols, 1), height), layout="constrained"
        )
        try:
            yield fig, list(np.atleast_1d(axes))
        finally:
            plt.close(fig)


def save_figure(
    fig: Any, png: PathLike, pdf: PathLike, source: str | None, title: str | None = None
) -> None:
    """Title the figure, note its data source under it (`source_footer`), keep every legend
    clear of that footer, write PNG and PDF."""
    if title:
        fig.suptitle(title)
    footer = source_footer(fig, source)
    if footer is not None:
        keep_legends_above(fig, footer)
    for path in (png, pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Producer": None})
    log.info("wrote %s and %s", png, pdf)


def source_footer(fig: Any, source: str | None) -> Any:
    """The figure's data source (dataset, scale, networks, FID extractor) under the figure,
    wrapped to the figure's width here (so that the layout measures its real height); the
    footer's Text, or None without a source."""
    if not source:
        return None
    points_per_character = FOOTER_FONT_SIZE * _FOOTER_CHARACTER_WIDTH
    width = max(int(fig.get_figwidth() * 72 / points_per_character), 20)
    wrapped = "\n".join(textwrap.wrap(source, width))
    return fig.supxlabel(wrapped, fontsize=FOOTER_FONT_SIZE, color="0.25")


def keep_legends_above(fig: Any, footer: Any, attempts: int = 4) -> None:
    """Grow the figure's height until no axes legend reaches down into `footer`."""
    for _ in range(attempts):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        if not legends:
            return
        lowest = min(legend.get_window_extent(renderer).y0 for legend in legends)
        gap = _FOOTER_GAP_POINTS * fig.dpi / 72
        overlap = footer.get_window_extent(renderer).y1 + gap - lowest
        if overlap <= 0:
            return
        fig.set_figheight(fig.get_figheight() + overlap / fig.dpi)


def not_run_note(ax: Any, missing: Sequence[str]) -> None:
    """Series without a result file, named under the panel's title (never as a legend entry
    without a point); call after ``set_title``."""
    if missing:
        ax.set_title(f"{ax.get_title()}\nnot run: {', '.join(missing)}")


def legend_below(ax: Any, ncol: int = 1) -> None:
    """The legend under the axes (and its x label), where it cannot cover a point or a
    reference line."""
    if ax.get_legend_handles_labels()[0]:
        below = -0.1 - 0.1 * (ax.get_xlabel().count("\n") + 1)  # under every x-label line
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, below), ncol=ncol, framealpha=0.8)


def empty_panel(ax: Any, title: str) -> None:
    ax.set_title(f"{title} {NOT_RUN}")
    ax.text(0.5, 0.5, "no result file", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plain_log_ticks(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers ("4.2", "10"), not "4.2×10⁰": on an axis that
    spans less than a decade matplotlib labels the minor ticks in scientific notation."""
    axis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
