"""PNG plots for the release report, drawn with matplotlib's Agg canvas (no display, no pyplot
global state: safe in a worker thread) and returned as bytes to inline as base64."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

_DPI = 100
_COLOURS = ("#2b7bba", "#d7301f", "#41ab5d", "#807dba")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def histogram_png(series: Mapping[str, np.ndarray], title: str, xlabel: str, bins: int = 30,
                  value_range: tuple[float, float] | None = None) -> bytes:
    """Overlaid histograms of the finite values of each series (e.g. kept vs rejected)."""
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    finite = {k: np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))]
              for k, v in series.items()}
    present = [v for v in finite.values() if v.size]
    if value_range is None and present:
        lo, hi = min(float(v.min()) for v in present), max(float(v.max()) for v in present)
        value_range = (lo, hi if hi > lo else lo + 1e-6)
    for (name, values), colour in zip(finite.items(), _COLOURS, strict=False):
        if values.size:
            ax.hist(values, bins=bins, range=value_range, alpha=0.6, color=colour,
                    label=f"{name} (n={values.size})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    if present:
        ax.legend(fontsize=8)
    return _png(fig)


def heatmap_png(matrix: np.ndarray, image_labels: Sequence[str], caption_labels: Sequence[str],
                owner: Sequence[int]) -> bytes:
    """Image x caption similarity; the true pairs are outlined."""
    rows, cols = matrix.shape
    fig = Figure(figsize=(min(12.0, 2.5 + 0.28 * cols), min(9.0, 1.8 + 0.3 * rows)))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=float(np.min(matrix)),
                   vmax=float(np.max(matrix)))
    for col, row in enumerate(owner):
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.2))
    ax.set_yticks(range(rows), labels=list(image_labels), fontsize=7)
    ax.set_xticks(range(cols), labels=list(caption_labels), fontsize=6, rotation=90)
    ax.set_xlabel("caption")
    ax.set_ylabel("image")
    ax.set_title("cosine similarity, image x caption (true pairs outlined)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _png(fig)


def bars_png(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> bytes:
    """Horizontal bars, largest first at the top."""
    fig = Figure(figsize=(6.4, max(1.6, 0.8 + 0.32 * len(labels))))
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, values, color=_COLOURS[0])
    ax.set_yticks(y, labels=list(labels), fontsize=8)
    ax.invert_yaxis()
    for yi, v in zip(y, values, strict=True):
        ax.text(float(v), float(yi), f" {v:,.0f}" if v >= 10 else f" {v:.3g}", va="center", fontsize=8)
    ax.set_xlim(0, max(values, default=1) * 1.2 or 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)
