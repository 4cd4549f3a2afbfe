"""Input records and derived rows counted apart: the tally of a table, its merge over blocks,
the run summary's lines and the report's counts, charts and per-kind table."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.release import report
from pipeline.release.summary import merge_tallies, summarise, summary_lines, tally

HARD_NEG, TOKEN, BBOX = "ERR_CROSS_MDL_HARD_NEG", "ERR_CROSS_MDL_TOKEN_FMT", "ERR_CROSS_MDL_OBJ_BBOX"


def rows() -> pa.Table:
    """4 input records (3 kept, 1 rejected), an augmented copy, two document windows, three
    negative pairs of which two are dropped, one of them made from the augmented copy."""
    spec: list[tuple[str | None, str, str, str | None, str | None, str | None, int | None, str | None]] = [
        # parent, status, kind, stage, code, negative_type, doc_window, augment_transforms
        (None, "ok", "object", None, None, None, None, None),
        (None, "ok", "object", None, None, None, None, None),
        (None, "rejected", "object", "placeholder_lint", TOKEN, None, None, None),
        (None, "ok", "document", None, None, None, None, None),
        ("o1", "ok", "object", None, None, None, None, "hflip"),
        ("d1", "ok", "document", None, None, None, 0, None),
        ("d1", "ok", "document", None, None, None, 1, None),
        ("o1", "ok", "object", None, None, "text", None, None),
        ("o1", "rejected", "object", "negatives_filter", HARD_NEG, "text", None, None),
        ("o1-aug0", "rejected", "object", "negatives_filter", HARD_NEG, "text", None, "hflip"),
    ]
    names = ["parent_id", "status", "kind", "reject_stage", "reject_code", "negative_type", "doc_window",
             "augment_transforms"]
    types = [pa.string()] * 6 + [pa.int32(), pa.string()]
    return pa.table({n: pa.array([r[i] for r in spec], t) for i, (n, t) in enumerate(zip(names, types, strict=True))})


def counts_of(table: pa.Table, **extra: Any) -> dict[str, Any]:
    """The release's counts as the manifest holds them, with ``by_origin``."""
    return {"input_records": 4, "kept": 3, "rejected": 1, "derived_kept": 4, "derived_rejected": 2,
            "kept_by_kind": {"document": 3, "object": 4}, "rejected_by_kind": {"object": 1},
            "rejected_by_code": {HARD_NEG: 2, TOKEN: 1},
            "rejected_by_stage_code": {f"negatives_filter/{HARD_NEG}": 2, f"placeholder_lint/{TOKEN}": 1},
            "by_origin": tally(table), **extra}


def test_tally_splits_input_records_from_each_derived_origin() -> None:
    t = tally(rows())
    assert t["input"] == {"kept_by_kind": {"document": 1, "object": 2}, "rejected_by_kind": {"object": 1},
                          "rejected_by_code": {TOKEN: 1}, "rejected_by_stage_code": {f"placeholder_lint/{TOKEN}": 1}}
    assert t["augmented"]["kept_by_kind"] == {"object": 1} and t["augmented"]["rejected_by_code"] == {}
    assert t["window"]["kept_by_kind"] == {"document": 2}
    # a negative made from an augmented copy is a negative pair
    assert t["negative"]["kept_by_kind"] == {"object": 1} and t["negative"]["rejected_by_code"] == {HARD_NEG: 2}


def test_tallies_of_blocks_merge_to_the_tally_of_the_table() -> None:
    table = rows()
    for cut in range(table.num_rows + 1):
        a, b = tally(table.slice(0, cut)), tally(table.slice(cut))
        assert merge_tallies(a, b) == merge_tallies(b, a) == tally(table)


def test_input_records_reconcile_by_code_and_derived_rows_are_labelled() -> None:
    s = summarise(counts_of(rows()))
    assert s.detail == "origin"
    assert s.inputs.kept + s.inputs.rejected == s.input_records == 4
    assert sum(s.inputs.rejected_by_code.values()) == s.inputs.rejected == 1
    assert [(g.label, g.kept, g.rejected) for g in s.derived] == [
        ("negative pairs", 1, 2), ("document windows", 2, 0), ("augmented copies", 1, 0)]
    lines = summary_lines(counts_of(rows()))
    assert lines[0] == "input records 4 = kept 3 + rejected 1"
    assert lines[1].split() == [TOKEN, "1"]  # the input codes add up to the rejected records
    assert lines[2] == "derived rows (made by stages, not input records): kept 4, dropped 2"
    assert "  negative pairs: kept 1, dropped 2" in lines
    assert [ln.split() for ln in lines if HARD_NEG in ln] == [[HARD_NEG, "2"]]
    assert lines.index("  negative pairs: kept 1, dropped 2") < lines.index(next(ln for ln in lines if HARD_NEG in ln))


def test_counts_without_origins_are_split_as_far_as_they_allow() -> None:
    base = counts_of(rows())
    del base["by_origin"]
    only_codes = summarise({**base, "derived_rejected_by_code": {HARD_NEG: 2}})
    assert only_codes.detail == "derived"
    assert only_codes.inputs.rejected_by_code == {TOKEN: 1}
    assert [(g.label, g.kept, g.rejected, g.rejected_by_code) for g in only_codes.derived] == [
        ("derived rows", 4, 2, {HARD_NEG: 2})]
    assert summary_lines({**base, "derived_rejected_by_code": {HARD_NEG: 2}})[1].split() == [TOKEN, "1"]
    mixed = summary_lines(base)
    assert mixed[1] == "  rejected rows by code (input records and derived rows together):"
    assert len(mixed) == 4


def test_report_counts_charts_and_kinds_keep_derived_rows_apart() -> None:
    counts = counts_of(rows())
    html = report._counts_section(counts) + report._rejects_section(counts, None, {})
    assert "<h3>Input records</h3>" in html and "<h3>Derived rows</h3>" in html
    assert "<td>negative pairs</td><td>1</td><td>2</td><td>ERR_CROSS_MDL_HARD_NEG: 2</td>" in html
    # kind, input records, kept, rejected, derived kept, derived dropped
    assert "<tr><td>object</td><td>3</td><td>2</td><td>1</td><td>2</td><td>2</td></tr>" in html
    assert "<tr><td>document</td><td>1</td><td>1</td><td>0</td><td>2</td><td>0</td></tr>" in html
    assert "alt='rejected input records by reason code'" in html
    assert "alt='dropped derived rows by reason code'" in html
    # the stage/code table: input records, then derived rows
    assert f"<td>negatives_filter</td><td>{HARD_NEG}</td><td>0</td><td>2</td>" in html
    assert f"<td>placeholder_lint</td><td>{TOKEN}</td><td>1</td><td>0</td>" in html
