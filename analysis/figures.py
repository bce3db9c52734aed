"""HTML and figure helpers every report section shares: a matplotlib figure as an embedded PNG, heatmaps, line
plots, tables and the stylesheet. One module below the sections (the run report, the fixed-text and component
sections, the study report), so no section imports another's renderer for them."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def png(fig: Any) -> str:
    """The figure as an ``<img>`` with its PNG inline (the report reads offline); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _grid(values: Sequence[Sequence[float | None]]) -> np.ndarray:
    width = max((len(r) for r in values), default=0)
    return np.array([[np.nan if v is None else v for v in r] + [np.nan] * (width - len(r)) for r in values], float)


def heatmap(
    values: Sequence[Sequence[float | None]],
    rows: Sequence[Any],
    title: str,
    xlabel: str = "layer",
    cols: Sequence[Any] | None = None,
    vmin: float = 0.5,
    vmax: float = 1.0,
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = _grid(values)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * max(g.shape[1], 1), 0.9 + 0.35 * max(g.shape[0], 1)))
    im = ax.imshow(g, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xticks(range(g.shape[1]), [str(c) for c in (cols if cols is not None else range(g.shape[1]))])
    for (i, j), v in np.ndenumerate(g):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < (vmin + vmax) / 2 else "k")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("step")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return png(fig)


def lines(x: Sequence[float], series: dict[str, Sequence[float | None]], title: str, xlabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, ys in series.items():
        pts = [(a, b) for a, b in zip(x, ys, strict=False) if b is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png(fig)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table, cells escaped, floats to 3 decimals, None empty."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
pre{white-space:pre-wrap;font-size:11px;background:#f6f6f6;padding:4px}.broken{color:#b00}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px}img{margin:4px}"""
