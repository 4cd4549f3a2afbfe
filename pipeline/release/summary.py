"""Input records and derived rows, counted apart: what the run summary and the report show.

A release's rows are of two origins. **Input records** (no ``parent_id``) reconcile: every one
is kept or rejected with a reason code, ``input = kept + rejected``. **Derived rows** were made
by a stage from another row (``parent_id`` set): augmented copies (``object_augment``),
document windows (``document_interleave``) and negative pairs (the ``negatives_*`` stages,
``segment_align``'s temporal-shift negatives); some of them are dropped with a code too, e.g.
candidate negatives that ``negatives_filter`` drops as likely false negatives
(``ERR_CROSS_MDL_HARD_NEG``). Mixing the two makes the per-code list of a run add up to more than
its rejected records, and a reject chart dominated by dropped candidates.

:func:`tally` counts one table (or one block of a streamed release: tallies of blocks add up
with :func:`merge_tallies`) into ``counts["by_origin"]``; :func:`summarise` and
:func:`summary_lines` are pure functions over a release's counts, used by ``xmodal run``,
``xmodal nightly`` and the report. Counts written before ``by_origin`` existed are summarised
with the input and derived codes together, and say so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import STATUS_OK

INPUT = "input"
# Derived origins in the order they are shown; the column whose presence marks each one.
DERIVED_ORIGINS: tuple[tuple[str, str | None], ...] = (
    ("negative", "negative_type"), ("window", "doc_window"), ("augmented", "augment_transforms"), ("derived", None))
LABELS = {
    INPUT: "input records", "negative": "negative pairs", "window": "document windows",
    "augmented": "augmented copies", "derived": "other derived rows",
}
TALLY_COLUMNS = ("parent_id", "status", "kind", "reject_stage", "reject_code",
                 *(c for _, c in DERIVED_ORIGINS if c))
_KEYS = ("kept_by_kind", "rejected_by_kind", "rejected_by_code", "rejected_by_stage_code")


def origins(table: pa.Table) -> np.ndarray:
    """Each row's origin: ``input`` (no parent), else the first derived origin whose marker
    column is set (a negative pair of an augmented copy is a negative pair)."""
    out = np.full(table.num_rows, "derived", dtype=object)
    decided = np.asarray(pc.is_null(table["parent_id"]), dtype=bool)
    out[decided] = INPUT
    for origin, column in DERIVED_ORIGINS:
        if column is None or column not in table.schema.names:
            continue
        hit = np.asarray(pc.is_valid(table[column]), dtype=bool) & ~decided
        out[hit] = origin
        decided |= hit
    return out


def tally(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    """``{origin: {kept_by_kind, rejected_by_kind, rejected_by_code, rejected_by_stage_code}}``
    of a table with at least ``parent_id``, ``status``, ``kind``, ``reject_stage`` and
    ``reject_code`` (the marker columns are used where present)."""
    groups: dict[str, dict[str, Counter[str]]] = {}
    columns = zip(origins(table), table["status"].to_pylist(), table["kind"].to_pylist(),
                  table["reject_stage"].to_pylist(), table["reject_code"].to_pylist(), strict=True)
    for origin, status, kind, stage, code in columns:
        g = groups.setdefault(str(origin), {k: Counter() for k in _KEYS})
        if status == STATUS_OK:
            g["kept_by_kind"][kind or "unknown"] += 1
        else:
            g["rejected_by_kind"][kind or "unknown"] += 1
            g["rejected_by_code"][str(code)] += 1
            g["rejected_by_stage_code"][f"{stage}/{code}"] += 1
    return {o: {k: dict(sorted(c.items())) for k, c in g.items()} for o, g in sorted(groups.items())}


def merge_tallies(a: Mapping[str, Mapping[str, Mapping[str, int]]],
                  b: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, dict[str, int]]]:
    """The tally of two blocks together (any order gives the same result)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for origin in sorted(set(a) | set(b)):
        merged = {}
        for key in _KEYS:
            c: Counter[str] = Counter(a.get(origin, {}).get(key, {}))
            c.update(b.get(origin, {}).get(key, {}))
            merged[key] = dict(sorted(c.items()))
        out[origin] = merged
    return out


@dataclass(frozen=True)
class RowGroup:
    """The rows of one origin: how many were kept and rejected (dropped), by kind and code."""

    origin: str
    label: str
    kept: int
    rejected: int
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    rejected_by_stage_code: dict[str, int] = field(default_factory=dict)


Detail = Literal["origin", "derived", "mixed"]


@dataclass(frozen=True)
class CountSummary:
    """A release's counts split by origin, as finely as the counts allow (``detail``):

    - ``origin``: counts with ``by_origin``: every group by kind, code and stage/code;
    - ``derived``: counts with ``derived_rejected_by_code`` only: input records' codes are the
      difference, derived rows are one group, and nothing is split by kind or stage;
    - ``mixed``: older counts: ``inputs``' codes include derived rows' and ``derived`` is empty.
    """

    input_records: int
    inputs: RowGroup
    derived: list[RowGroup]
    detail: Detail

    @property
    def derived_kept(self) -> int:
        return sum(g.kept for g in self.derived)

    @property
    def derived_dropped(self) -> int:
        return sum(g.rejected for g in self.derived)


def _group(origin: str, data: Mapping[str, Any]) -> RowGroup:
    dicts = [dict(data.get(k, {})) for k in _KEYS]
    return RowGroup(origin, LABELS.get(origin, origin), sum(dicts[0].values()), sum(dicts[1].values()), *dicts)


def summarise(counts: Mapping[str, Any]) -> CountSummary:
    """Split a release's ``counts`` (the release's, or a manifest's) by origin."""
    n, by_origin = counts["input_records"], counts.get("by_origin")
    if by_origin is not None:
        known = [o for o, _ in DERIVED_ORIGINS]
        order = known + sorted(set(by_origin) - {INPUT, *known})
        derived = [_group(o, by_origin[o]) for o in order if o in by_origin]
        return CountSummary(n, _group(INPUT, by_origin.get(INPUT, {})), derived, "origin")
    all_codes: Counter[str] = Counter(counts["rejected_by_code"])
    if "derived_rejected_by_code" not in counts:
        inputs = RowGroup(INPUT, "input records and derived rows together", counts["kept"], counts["rejected"],
                          rejected_by_code=dict(all_codes))
        return CountSummary(n, inputs, [], "mixed")
    derived_codes = dict(counts["derived_rejected_by_code"])
    all_codes.subtract(derived_codes)
    inputs = RowGroup(INPUT, LABELS[INPUT], counts["kept"], counts["rejected"],
                      rejected_by_kind=dict(counts.get("rejected_by_kind", {})),
                      rejected_by_code={c: k for c, k in sorted(all_codes.items()) if k > 0})
    derived = [RowGroup("derived", "derived rows", counts["derived_kept"], counts["derived_rejected"],
                        rejected_by_code=derived_codes)]
    return CountSummary(n, inputs, derived if counts["derived_kept"] or counts["derived_rejected"] else [], "derived")


def _code_lines(by_code: Mapping[str, int], indent: str) -> list[str]:
    return [f"{indent}{code:<{36 - len(indent)}s}{n:>8d}" for code, n in sorted(by_code.items())]


def summary_lines(counts: Mapping[str, Any]) -> list[str]:
    """The run summary: input records (kept + rejected = input, by code), then derived rows
    (kept and dropped, by origin and code). Every number has its label."""
    s = summarise(counts)
    lines = [f"input records {s.input_records} = kept {s.inputs.kept} + rejected {s.inputs.rejected}"]
    if s.detail == "mixed":
        lines.append("  rejected rows by code (input records and derived rows together):")
        return lines + _code_lines(s.inputs.rejected_by_code, "    ")
    lines += _code_lines(s.inputs.rejected_by_code, "  ")
    if s.derived:
        lines.append(f"derived rows (made by stages, not input records): kept {s.derived_kept}, "
                     f"dropped {s.derived_dropped}")
        for g in s.derived:
            if s.detail == "origin":
                lines.append(f"  {g.label}: kept {g.kept}, dropped {g.rejected}")
            lines += _code_lines(g.rejected_by_code, "    " if s.detail == "origin" else "  ")
    return lines
