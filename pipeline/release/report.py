"""``report/index.html``: one self-contained page (no external asset, no script; plots inlined as
base64 PNG) with the release's gates, counts, metrics, plots and example rejected rows (an object
example with its image as a thumbnail, every box drawn in its colour and labelled).

Sections whose inputs are absent say so (``ReleaseMetrics.skipped``) instead of disappearing.
Links point inside the page (``#reject-<id>``) or to the release's own files (``../rejects/...``),
so the page opens offline from a local copy or from the bucket.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.release import ReleaseMetrics
from pipeline.release import plots
from pipeline.release.report_audio import audio_text_section
from pipeline.release.report_html import e as _e
from pipeline.release.report_html import fmt as _fmt
from pipeline.release.report_html import img as _img
from pipeline.release.report_html import skip as _skip
from pipeline.release.report_html import table as _table
from pipeline.release.summary import summarise
from pipeline.release.thumbnails import boxed_thumbnail_png
from schemas.records import STATUS_OK

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}.wrap{overflow-wrap:anywhere}
th{background:#f3f3f3}code{font-size:90%}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
.pass{color:#1a7f37}.fail{color:#b42318;font-weight:600}.note{color:#666;font-style:italic}
img{max-width:100%;display:block;margin:.5rem 0}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-width:40rem;font-size:85%}
"""


def _gates_section(gates: Sequence[Any]) -> str:
    if not gates:
        return "<h2 id='gates'>Quality gates</h2><p class='note'>No gate is configured.</p>"
    rows = []
    for g in gates:
        verdict = ("<span class='pass'>skipped</span>" if g.skipped else
                   "<span class='pass'>pass</span>" if g.passed else "<span class='fail'>FAIL</span>")
        value = "-" if g.value is None else f"{g.value:.4g}"
        margin = "-" if g.margin is None else f"{g.margin:+.4g}"
        rows.append([_e(g.gate), _e(g.metric), _e(value), _e(f"{g.op} {g.threshold:g}"), _e(margin), verdict])
    return "<h2 id='gates'>Quality gates</h2>" + _table(
        ["gate", "metric", "value", "threshold", "margin", "result"], rows, raw=True)


def _counts_section(counts: Mapping[str, Any]) -> str:
    """Input records (they reconcile) apart from derived rows (made by stages), and per kind."""
    s = summarise(counts)
    out = ("<h2 id='counts'>Counts</h2><h3>Input records</h3><p>Every input record is kept or rejected "
           "with a reason code: input records = kept + rejected.</p>"
           + _table(["input records", "kept", "rejected"], [[s.input_records, s.inputs.kept, s.inputs.rejected]]))
    if s.derived:
        out += ("<h3>Derived rows</h3><p>Rows that stages made from other rows (augmented copies, "
                "document windows, negative pairs); they are not input records and are not part of the "
                "reconciliation. Dropped ones are kept under <code>rejects/</code> with their code.</p>"
                + _table(["derived rows", "kept", "dropped", "dropped by code"],
                         [[g.label, g.kept, g.rejected,
                           ", ".join(f"{c}: {n}" for c, n in g.rejected_by_code.items()) or "-"] for g in s.derived]))
    if s.detail != "origin":
        kinds = sorted(set(counts["kept_by_kind"]) | set(counts.get("rejected_by_kind", {})))
        return out + "<h3>By kind</h3>" + _table(
            ["kind", "kept rows (input and derived)", "rejected input records"],
            [[k, counts["kept_by_kind"].get(k, 0), counts.get("rejected_by_kind", {}).get(k, 0)] for k in kinds])
    kinds = sorted(set(s.inputs.kept_by_kind) | set(s.inputs.rejected_by_kind)
                   | {k for g in s.derived for k in (*g.kept_by_kind, *g.rejected_by_kind)})
    rows = []
    for k in kinds:
        kept, rejected = s.inputs.kept_by_kind.get(k, 0), s.inputs.rejected_by_kind.get(k, 0)
        rows.append([k, kept + rejected, kept, rejected, sum(g.kept_by_kind.get(k, 0) for g in s.derived),
                     sum(g.rejected_by_kind.get(k, 0) for g in s.derived)])
    return out + "<h3>By kind</h3>" + _table(
        ["kind", "input records", "kept", "rejected", "derived kept", "derived dropped"], rows)


def _code_bars(by_code: Mapping[str, int], title: str, ylabel: str) -> str:
    ordered = sorted(by_code.items(), key=lambda kv: -kv[1])
    return _img(plots.bars_png([c for c, _ in ordered], [n for _, n in ordered], title, ylabel), title)


def _rejects_section(counts: Mapping[str, Any], metrics: ReleaseMetrics | None,
                     first_example: Mapping[str, str]) -> str:
    by_sc = counts["rejected_by_stage_code"]
    parts = ["<h2 id='rejects'>Rejects by code</h2>"]
    if not by_sc:
        return parts[0] + "<p>No row was rejected.</p>"
    s = summarise(counts)
    if s.inputs.rejected_by_code:
        title = ("rejected rows by reason code (input and derived)" if s.detail == "mixed"
                 else "rejected input records by reason code")
        parts.append(_code_bars(s.inputs.rejected_by_code, title, "rows"))
    derived_codes: Counter[str] = Counter()
    derived_sc: Counter[str] = Counter()
    for g in s.derived:
        derived_codes.update(g.rejected_by_code)
        derived_sc.update(g.rejected_by_stage_code)
    if +derived_codes:
        parts.append(_code_bars(derived_codes, "dropped derived rows by reason code", "derived rows"))
    rates = metrics.values.get("rejects", {}).get("rate_by_code", {}) if metrics else {}
    split = s.detail == "origin"
    rows = []
    for key, n in sorted(by_sc.items()):
        stage, code = key.split("/", 1)
        example = first_example.get(key)
        link = f"<a href='#reject-{_e(example)}'>examples</a>" if example else "-"
        shard = f"<a class='wrap' href='../rejects/{_e(stage)}/{_e(code)}/'>rejects/{_e(stage)}/{_e(code)}/</a>"
        counted = [s.inputs.rejected_by_stage_code.get(key, 0), derived_sc.get(key, 0)] if split else [n]
        rows.append([_e(stage), _e(code), *counted, _e(_fmt(rates.get(code))), link, shard])
    counted_headers = ["input records", "derived rows"] if split else ["rows (input and derived)"]
    parts.append(_table(["stage", "code", *counted_headers, "rate (input)", "in this page", "files"], rows, raw=True))
    return "".join(parts)


def _retrieval_section(metrics: ReleaseMetrics | None) -> str:
    out = "<h2 id='retrieval'>Cross-modal retrieval</h2>"
    r = metrics.values.get("retrieval") if metrics else None
    if not r or metrics is None:
        return out + _skip(metrics, "retrieval")
    ks = list(r["image_to_text"])
    pb = r["per_batch"]
    rows = [["image->text (release)", *[_fmt(r["image_to_text"][k]) for k in ks]],
            ["text->image (release)", *[_fmt(r["text_to_image"][k]) for k in ks]]]
    for direction, name in (("image_to_text", "image->text"), ("text_to_image", "text->image")):
        rows.append([f"{name} per batch of {pb['batch_images']} (mean [min, max])",
                     *[f"{_fmt(pb[direction][k]['mean'])} [{_fmt(pb[direction][k]['min'])}, "
                       f"{_fmt(pb[direction][k]['max'])}]" for k in ks]])
    out += (f"<p>{r['images']} images and {r['texts']} captions (of {r['pool_images']} kept images"
            f"; {pb['batches']} batch(es)); embeddings <code>{_e(r['columns']['image'])}</code> x "
            f"<code>{_e(', '.join(r['columns']['text']))}</code>. image->text counts an image as "
            "found at its best-ranked caption.</p>")
    out += _table(["direction", *[k.upper() for k in ks]], rows)
    p = metrics.plots
    if p.heatmap is not None:
        out += _img(plots.heatmap_png(p.heatmap, p.heatmap_images, p.heatmap_captions,
                                      p.heatmap_owner), "similarity matrix")
    return out


def _similarity_section(metrics: ReleaseMetrics | None) -> str:
    out = "<h2 id='similarity'>Image-text similarity, kept vs rejected</h2>"
    s = metrics.values.get("similarity") if metrics else None
    if not s or metrics is None:
        return out + _skip(metrics, "similarity")
    series = {"kept": metrics.plots.similarity_kept, "rejected": metrics.plots.similarity_rejected}
    out += _img(plots.histogram_png({k: v for k, v in series.items() if v is not None},
                                    f"similarity ({s['source']})", "similarity"), "similarity")
    rows = [[name, d["count"], _fmt(d.get("mean")), _fmt(d.get("median")), _fmt(d.get("p05"))]
            for name, d in (("kept", s["kept"]), ("rejected", s["rejected"]))]
    return out + _table(["rows", "n", "mean", "median", "p05"], rows)


def _object_section(metrics: ReleaseMetrics | None) -> str:
    out = "<h2 id='hallucination'>Hallucination (CHAIR)</h2>"
    h = metrics.values.get("hallucination") if metrics else None
    if h and metrics is not None:
        rows = [[name, _fmt(x["chair_i"]), _fmt(x["chair_s"]), x["mentions"], x["captions"]]
                for name, x in (("kept object rows", h), ("all object rows", h["all_object_rows"]))]
        out += _table(["rows", "CHAIR-i", "CHAIR-s", "object mentions", "captions"], rows)
        top = h["all_object_rows"]["top_objects"]
        if top:
            out += "<p>Most hallucinated (all rows): " + _e(", ".join(f"{k} ({v})" for k, v in top.items())) + "</p>"
    else:
        out += _skip(metrics, "hallucination")
    out += "<h2 id='conflicts'>Caption conflicts (entailment)</h2>"
    c = metrics.values.get("entailment") if metrics else None
    if not c or metrics is None:
        return out + _skip(metrics, "entailment")
    out += _table(["images (2+ captions)", "caption pairs", "conflicting images", "image rate",
                   "conflicting pairs", "pair rate", "pairs by type"],
                  [[c["images"], c["pairs"], c["conflicting_images"], _fmt(c["image_conflict_rate"]),
                    c["conflicting_pairs"], _fmt(c["pair_conflict_rate"]),
                    ", ".join(f"{k}: {v}" for k, v in c["pairs_by_type"].items()) or "-"]])
    if metrics.conflict_examples:
        out += _table(["id", "type", "conflict", "caption A", "caption B"],
                      [[x["id"], x["type"], x["detail"], x["caption_a"], x["caption_b"]]
                       for x in metrics.conflict_examples[:10]])
    return out


def _distribution_section(anchor: str, title: str, key: str, values: np.ndarray | None,
                          metrics: ReleaseMetrics | None, xlabel: str,
                          value_range: tuple[float, float] | None = None) -> str:
    out = f"<h2 id='{anchor}'>{_e(title)}</h2>"
    d = metrics.values.get(key) if metrics else None
    if not d or values is None:
        return out + _skip(metrics, key)
    out += _img(plots.histogram_png({key: values}, title, xlabel, bins=20, value_range=value_range), title)
    return out + _table(["n", "mean", "p05", "p25", "median", "p75", "p95", "min", "max"],
                        [[d["count"], *[_fmt(d.get(q)) for q in
                                        ("mean", "p05", "p25", "median", "p75", "p95", "min", "max")]]])


def _negatives_section(metrics: ReleaseMetrics | None) -> str:
    out = "<h2 id='negatives'>Negative pairs</h2>"
    n = metrics.values.get("negatives") if metrics else None
    if not n or metrics is None:
        return out + _skip(metrics, "negatives")
    out += _table(["negative rows", "kept", "rejected HARD_NEG", "false-negative rate",
                   "worst batch", "by type", "by verdict"],
                  [[n["rows"], n["kept"], n["false_negatives_dropped"], _fmt(n.get("false_negative_rate")),
                    _fmt(n.get("false_negative_rate_worst_batch")),
                    ", ".join(f"{k}: {v}" for k, v in n["by_type"].items()),
                    ", ".join(f"{k}: {v}" for k, v in n.get("by_verdict", {}).items()) or "-"]])
    p = metrics.plots
    if p.difficulty_kept is not None:
        out += _img(plots.histogram_png({"kept": p.difficulty_kept, "dropped": p.difficulty_dropped
                                         if p.difficulty_dropped is not None else np.empty(0)},
                                        f"negative difficulty ({n['difficulty_column']})", "difficulty"),
                    "negative difficulty")
    c = n.get("clean_vs_swapped")
    if c and p.swap_clean is not None and p.swap_mismatched is not None:
        out += (f"<p>Clean caption vs its rule-made mismatch (one attribute or word order changed), "
                f"same image, {c['pairs']} pairs: the mismatch scores lower in "
                f"{_fmt(c['swapped_below_clean'])} of them.</p>")
        out += _img(plots.histogram_png({"clean caption": p.swap_clean, "swapped caption": p.swap_mismatched},
                                        "clean vs swapped captions", "similarity"),
                    "clean vs swapped captions")
    return out + _skip(metrics, "false_negative_rate")


def _throughput_section(stage_timings: Sequence[Any]) -> str:
    """``(stage, rows_in, seconds)`` tuples, or mappings that also give ``rows_out``."""
    out = "<h2 id='throughput'>Per-stage throughput</h2>"
    if not stage_timings:
        return out + "<p class='note'>No stage timing was recorded.</p>"
    rows = []
    for t in stage_timings:
        if isinstance(t, Mapping):
            rows.append((t["stage"], int(t["rows_in"]), t.get("rows_out"), float(t["seconds"])))
        else:
            rows.append((t[0], int(t[1]), None, float(t[2])))
    rates = [r / s if s > 0 else 0.0 for _, r, _, s in rows]
    out += _img(plots.bars_png([n for n, _, _, _ in rows], rates, "throughput", "rows/s"), "throughput")
    out += ("<p class='note'>Seconds are the time spent in each stage (on Ray, summed over its "
            "workers), not wall time.</p>")
    return out + _table(["stage", "rows in", "rows out", "seconds", "rows/s"],
                        [[n, r, "-" if o is None else o, f"{s:.2f}", f"{r / s:,.0f}" if s > 0 else "-"]
                         for n, r, o, s in rows])


def _examples_section(examples: pa.Table, shard_of: Mapping[str, str]) -> str:
    out = ("<h2 id='examples'>Example rejected rows</h2><p>Every rejected row is in "
           "<code>rejects/&lt;stage&gt;/&lt;code&gt;/</code>; the link beside each example names its file.</p>")
    rows, bodies = [], []
    for r in examples.to_pylist():
        shard = shard_of.get(r["id"])
        link = f"<a class='wrap' href='../{_e(shard)}'>{_e(shard)}</a>" if shard else "-"
        thumb = boxed_thumbnail_png(r, size=160) if r.get("kind") == "object" else None
        rows.append([f"<a id='reject-{_e(r['id'])}'></a>{_e(r['reject_code'])}",
                     f"<a href='#row-{_e(r['id'])}'>{_e(r['id'])}</a>", _e(r["kind"]), _e(r["reject_stage"]),
                     f"<span class='wrap'>{_e(r['reject_detail'] or '-')}</span>",
                     f"<span class='wrap'>{_e(r.get('source_ref') or '-')}</span>", link,
                     _img(thumb, f"boxes of {r['id']}") if thumb else "-"])
        fields = {k: v for k, v in r.items() if k in ("content", "captions", "media", "boxes", "subtitles", "items")}
        body = json.dumps(fields, ensure_ascii=False, indent=1, default=str)[:4000]
        bodies.append(f"<details id='row-{_e(r['id'])}'><summary>{_e(r['id'])}</summary>"
                      f"<pre>{_e(body)}</pre></details>")
    out += _table(["code", "id", "kind", "stage", "detail", "source", "file", "image, boxes drawn"], rows, raw=True)
    return out + ("<h3>The example rows</h3>" + "".join(bodies) if bodies else "")


def pick_examples(table: pa.Table, per_code: int) -> pa.Table:
    """The first ``per_code`` rejected rows of each stage/code, in release order (kind, id)."""
    rejected = table.filter(pc.fill_null(pc.not_equal(table["status"], STATUS_OK), False))
    rejected = rejected.sort_by([("kind", "ascending"), ("id", "ascending")])
    keys = [f"{s}/{c}" for s, c in zip(rejected["reject_stage"].to_pylist(),
                                       rejected["reject_code"].to_pylist(), strict=True)]
    seen: Counter[str] = Counter()
    take = []
    for i, key in enumerate(keys):
        if seen[key] < per_code:
            take.append(i)
            seen[key] += 1
    return rejected.take(pa.array(take, pa.int64()))  # typed: an empty list is null-typed


def render_report(
    *,
    dataset: str,
    version: str,
    counts: Mapping[str, Any],
    table: pa.Table | None = None,
    examples: pa.Table | None = None,
    stage_timings: Sequence[Any] = (),
    metrics: ReleaseMetrics | None = None,
    gates: Sequence[Any] = (),
    reject_shards: Mapping[str, str] | None = None,
    sections: Sequence[str] = (),
    examples_per_code: int = 3,
) -> str:
    """HTML for one release. ``gates`` are ``pipeline.release.gates.GateResult``; ``reject_shards`` maps
    a rejected row's id to its file in the release; ``sections`` are extra HTML fragments;
    ``stage_timings`` are ``(stage, rows_in, seconds)``."""
    failing = [g for g in gates if not g.passed]
    status = (f"<p class='fail'>{len(failing)} quality gate(s) failed: this version was not published.</p>"
              if failing else "<p class='pass'>Every configured quality gate passed.</p>" if gates else "")
    if examples is None:  # the release passes the examples it gathered block by block
        examples = (pick_examples(table, examples_per_code) if table is not None else
                    pa.table({c: pa.array([], pa.string()) for c in ("id", "reject_stage", "reject_code")}))
    first_example: dict[str, str] = {}
    for r in examples.select(["id", "reject_stage", "reject_code"]).to_pylist():
        first_example.setdefault(f"{r['reject_stage']}/{r['reject_code']}", r["id"])
    m = metrics
    parts = [
        f"<h1>{_e(dataset)} {_e(version)}</h1>", status,
        _gates_section(gates), _counts_section(counts), _rejects_section(counts, m, first_example),
        _retrieval_section(m), _similarity_section(m), audio_text_section(m), _object_section(m),
        _distribution_section("continuity", "Temporal continuity (segments)", "continuity",
                              m.plots.continuity if m else None, m, "Kendall tau, subtitle vs aligned order",
                              (-1.0, 1.0)),
        _negatives_section(m), _throughput_section(stage_timings),
        _examples_section(examples, reject_shards or {}), *sections,
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_e(dataset)} {_e(version)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
