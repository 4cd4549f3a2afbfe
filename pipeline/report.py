"""``report/index.html``: a self-contained page (no external assets) with the release's counts,
rejects by stage and code with example rows, and per-stage throughput."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import STATUS_OK

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}code{font-size:90%}h2{margin-top:2rem}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(
    *,
    dataset: str,
    version: str,
    counts: Mapping[str, Any],
    table: pa.Table,
    stage_timings: Sequence[tuple[str, int, float]] = (),
    sections: Sequence[str] = (),
    examples_per_code: int = 3,
) -> str:
    """HTML for one release. ``sections`` are extra HTML fragments (metrics, plots) added by
    other steps; ``stage_timings`` are ``(stage, rows_in, seconds)``."""
    parts = [f"<h1>{html.escape(dataset)} {html.escape(version)}</h1>"]
    parts.append("<h2>Counts</h2>" + _table(
        ["input records", "kept", "rejected", "derived kept", "derived rejected"],
        [[counts["input_records"], counts["kept"], counts["rejected"], counts["derived_kept"], counts["derived_rejected"]]],
    ))
    parts.append("<h2>Kept by kind</h2>" + _table(["kind", "rows"], sorted(counts["kept_by_kind"].items())))
    parts.append("<h2>Rejects by stage and code</h2>" + _table(
        ["stage/code", "rows"], sorted(counts["rejected_by_stage_code"].items())
    ))
    rejected = table.filter(pc.not_equal(table["status"], STATUS_OK))
    example_rows = []
    for code in sorted(counts["rejected_by_code"]):
        sub = rejected.filter(pc.equal(rejected["reject_code"], code)).slice(0, examples_per_code)
        for r in sub.select(["id", "kind", "reject_stage", "reject_code", "reject_detail"]).to_pylist():
            example_rows.append([r["reject_code"], r["id"], r["kind"], r["reject_stage"], r["reject_detail"]])
    parts.append(
        "<h2>Example rejected rows</h2><p>All rejected rows are under <code>rejects/&lt;stage&gt;/&lt;code&gt;/</code>.</p>"
        + _table(["code", "id", "kind", "stage", "detail"], example_rows)
    )
    if stage_timings:
        parts.append("<h2>Per-stage throughput</h2>" + _table(
            ["stage", "rows in", "seconds", "rows/s"],
            [[n, r, f"{s:.2f}", f"{r / s:.0f}" if s > 0 else "-"] for n, r, s in stage_timings],
        ))
    parts.extend(sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(dataset)} {html.escape(version)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
