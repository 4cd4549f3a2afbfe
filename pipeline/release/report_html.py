"""The small HTML pieces every part of ``report/index.html`` builds with (``report.py`` and the
sections it imports: ``report_audio``, ``report_dataset_checks``): escaping, tables, inlined
PNGs, number formatting and the "Not measured" note of a skipped metric."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

from pipeline.metrics.release import ReleaseMetrics


def e(value: Any) -> str:
    return html.escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    cell = (lambda c: str(c)) if raw else e
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def img(png: bytes, alt: str) -> str:
    return f"<img alt='{e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def skip(metrics: ReleaseMetrics | None, *keys: str) -> str:
    """The reasons the metrics name for ``keys`` not being measured (none: an empty string)."""
    reasons = [metrics.skipped[k] for k in keys if metrics and k in metrics.skipped]
    if metrics is None:
        reasons = ["metrics were not computed"]
    return "".join(f"<p class='note'>Not measured: {e(r)}.</p>" for r in reasons)
