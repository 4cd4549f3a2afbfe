"""The report's "Dataset-level checks" section: rows rejected by each check, the top template
captions with their counts and thumbnails of a few rejected uses, and the evaluation leakage
per evaluation set (rows, found by image or by caption, a few rows with the evaluation row each
copies).

It reads the summary the run put in the ``dataset_checks`` entry of its stage timings
(``pipeline.run.dataset_checks.summarise_verdicts``); a run without the checks has no section.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.release.report_html import e as _e
from pipeline.release.thumbnails import boxed_thumbnail_png
from schemas.reason_codes import ReasonCode

THUMB_PX = 96


def checks_summary(stage_timings: Sequence[Any]) -> Mapping[str, Any] | None:
    """The dataset checks' summary among ``stage_timings``, or None when they did not run."""
    for t in stage_timings:
        if isinstance(t, Mapping) and t.get("stage") == "dataset_checks" and isinstance(t.get("summary"), Mapping):
            return t["summary"]
    return None


def _thumbs(images: Sequence[str]) -> str:
    out = []
    for uri in images:
        png = boxed_thumbnail_png({"media": [{"modality": "image", "uri": uri}]}, size=THUMB_PX)
        if png:
            out.append(f"<img style='display:inline-block;margin:2px' alt='{_e(uri)}' "
                       f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    return "".join(out) or "-"


def _leakage(summary: Mapping[str, Any]) -> str:
    """The evaluation-leakage table: one row per evaluation set with leaked rows (none when the
    run had no leakage check or found nothing)."""
    sets = summary.get("leakage")
    if not isinstance(sets, Mapping) or not sets:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("evaluation set", "rows", "by image", "by caption",
                                             "examples (row &rarr; evaluation row)"))
    body = "".join(
        f"<tr><td>{_e(name)}</td><td>{int(s.get('rows', 0))}</td><td>{int(s.get('by_image', 0))}</td>"
        f"<td>{int(s.get('by_caption', 0))}</td><td class='wrap'>"
        + (", ".join(f"{_e(x.get('id'))} &rarr; {_e(name)}/{_e(x.get('eval_id'))} ({_e(x.get('by'))})"
                     for x in s.get("examples") or []) or "-")
        + "</td></tr>"
        for name, s in sets.items() if isinstance(s, Mapping))
    return ("<h3>Evaluation leakage</h3><p>Rows that copy a row of an evaluation set (an image "
            "cosine of at least <code>leakage.threshold</code>, or one of its captions verbatim): "
            f"rejected, <code>{ReasonCode.DUPLICATE}</code>.</p><table><tr>{head}</tr>{body}</table>")


def dataset_checks_sections(stage_timings: Sequence[Any]) -> list[str]:
    """The section's HTML (one fragment), or none when the run had no dataset-level checks."""
    summary = checks_summary(stage_timings)
    if summary is None:
        return []
    rejected = summary.get("rejected", {})
    out = ("<h2 id='dataset-checks'>Dataset-level checks</h2>"
           f"<p>Rows rejected at stage <code>dataset_checks</code>: {rejected.get('template', 0)} "
           f"template uses (<code>{ReasonCode.TEMPLATE}</code>), {rejected.get('duplicate', 0)} "
           f"near-duplicates and {rejected.get('leakage', 0)} copies of evaluation rows "
           f"(<code>{ReasonCode.DUPLICATE}</code>); each detail names the kept or evaluation row.</p>")
    out += _leakage(summary)
    templates = summary.get("templates") or []
    if not templates:
        return [out + "<p class='note'>No template caption was found.</p>"]
    total = summary.get("templates_total", len(templates))
    out += (f"<h3>Top template captions ({len(templates)} of {total})</h3><p>A caption carried by more "
            "visually distinct images than <code>templates.max_uses</code>; the best-scoring uses are "
            "kept, the thumbnails show rejected ones.</p>")
    head = "".join(f"<th>{h}</th>" for h in ("caption", "rows", "rejected", "kept (first)", "rejected uses"))
    body = "".join(
        f"<tr><td class='wrap'>{_e(t['caption'])}</td><td>{int(t['rows'])}</td><td>{int(t['rejected'])}</td>"
        f"<td class='wrap'>{_e(', '.join(t.get('kept') or []) or '-')}</td>"
        f"<td>{_thumbs(t.get('images') or [])}</td></tr>"
        for t in templates)
    return [out + f"<table><tr>{head}</tr>{body}</table>"]
