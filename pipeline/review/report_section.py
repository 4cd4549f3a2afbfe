"""The "Human review" section: agreement per check with Wilson intervals, the gates, and what
the reviewers noted; appended to a copy of the release's report (the release's own report is
part of what its manifest hashes, so it is never rewritten). A later build can pass the same
fragment to ``render_report(sections=[...])``."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from pipeline.release.gates import GateResult
from pipeline.review.agreement import RowReview


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _rate(entry: dict[str, Any] | None) -> list[str]:
    if not entry or entry.get("rate") is None:
        return ["0", "-", "-"]
    lo, hi = entry["wilson95"]
    return [f"{entry['k']} / {entry['n']}", f"{entry['rate']:.3f}", f"[{lo:.3f}, {hi:.3f}]"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def review_section(figures: dict[str, Any], gates: Sequence[GateResult], rows: Sequence[RowReview]) -> str:
    out = [f"<h2 id='review'>Human review</h2><p>{figures['rows']} sampled rows judged by "
           f"{len(figures['reviewers'])} reviewer(s) ({_e(', '.join(figures['reviewers']))}), "
           f"{figures['verdicts']} verdicts; {figures['contested']} row(s) contested (a tie, counted nowhere). "
           "Rates are over the sampled rows, with Wilson 95% intervals.</p>"]
    out.append("<h3>Precision of each reject code (reviewers agree the row deserved it)</h3>")
    out.append(_table(["code", "agree / reviewed", "precision", "Wilson 95%"],
                      [[_e(code), *_rate(entry)] for code, entry in figures["precision"].items()])
               if figures["precision"] else "<p class='note'>No rejected row was reviewed.</p>")
    miss = figures["miss_rate"]
    out.append("<h3>Miss rate on sampled kept rows (reviewers say it should have been rejected)</h3>")
    miss_rows = [["all kept rows", *_rate(miss["all"])]]
    miss_rows += [[f"kind {_e(g)}", *_rate(entry)] for g, entry in miss["by_group"].items()]
    miss_rows += [[f"named {_e(c)}", *_rate(entry)] for c, entry in miss["by_code"].items()]
    out.append(_table(["rows", "missed / reviewed", "miss rate", "Wilson 95%"], miss_rows))
    if gates:
        out.append("<h3>Review gates</h3>")
        out.append(_table(["gate", "metric", "value", "threshold", "result"], [
            [_e(g.gate), _e(g.metric), "-" if g.value is None else f"{g.value:.4g}", _e(f"{g.op} {g.threshold:g}"),
             "<span class='pass'>skipped</span>" if g.skipped else
             "<span class='pass'>pass</span>" if g.passed else "<span class='fail'>FAIL</span>"] for g in gates]))
    disputed = [r for r in rows if r.outcome != "agree" or r.notes]
    if disputed:
        out.append("<h3>Disagreements and notes</h3>")
        out.append(_table(["row", "id", "release said", "reviewers", "review_status", "notes"], [
            [f"<code>{_e(r.key)}</code>", _e(r.id), _e(r.check), f"{r.agree} agree, {r.disagree} disagree",
             _e(r.review_status), _e(" | ".join(r.notes))] for r in disputed]))
    return "".join(out)


def with_section(report_html: str | None, section: str, title: str, version: str) -> str:
    """The release's report with ``section`` before ``</body>``; its links to the release's files
    (``../rejects/...``, relative to ``report/``) now point from ``_reviews/<version>/``."""
    if not report_html or "</body>" not in report_html:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title></head><body>"
                f"<h1>{_e(title)}</h1><p class='note'>The release has no report; this is the review alone.</p>"
                f"{section}</body></html>")
    page = report_html.replace("href='../", f"href='../../{_e(version)}/")
    return page.replace("</body>", section + "</body>", 1)
