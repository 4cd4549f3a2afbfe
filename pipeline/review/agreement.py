"""How far the reviewers agree with each check, from the latest verdict of each reviewer on
each row.

A row's outcome is the majority of its reviewers (a tie is ``contested`` and counts nowhere).
Its ``review_status`` follows: a rejected row the reviewers agree with is ``rejected``, one they
disagree with ``approved``; a kept row they agree with is ``approved``, one they disagree with
``rejected``; a contested row stays ``sampled``.

- precision of a reason code: the share of its reviewed rejected rows the reviewers agree with;
- miss rate: the share of reviewed kept rows the reviewers disagree with, overall, by kind
  (negative pairs apart) and by the code the reviewers named (``unspecified`` when none).

Each rate comes with its Wilson 95% score interval. The rates are over the sampled rows, which
the sampler draws per stratum: they are not weighted back to the release's proportions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.review.verdicts import Verdict

Z95 = 1.959963984540054
UNSPECIFIED = "unspecified"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``k`` successes in ``n`` trials (None when ``n`` is 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    def to_json(self) -> dict[str, Any]:
        interval = wilson(self.k, self.n)
        return {"k": self.k, "n": self.n, "rate": self.rate,
                "wilson95": None if interval is None else [round(interval[0], 6), round(interval[1], 6)]}


@dataclass
class RowReview:
    """The verdicts on one row. ``group`` is the row's kind, or ``negatives`` for a kept negative
    pair; ``check`` is ``kept`` or the reason code."""

    key: str
    id: str | None
    kind: str | None
    group: str
    check: str
    stage: str | None
    agree: int = 0
    disagree: int = 0
    reviewers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # named by disagreeing reviewers of a kept row

    @property
    def outcome(self) -> str:
        if self.agree == self.disagree:
            return "contested"
        return "agree" if self.agree > self.disagree else "disagree"

    @property
    def review_status(self) -> str:
        if self.outcome == "contested":
            return "sampled"
        rejected = (self.check != "kept") == (self.outcome == "agree")
        return "rejected" if rejected else "approved"

    @property
    def missed_code(self) -> str:
        if not self.codes:
            return UNSPECIFIED
        counts = Counter(self.codes)
        return min(counts, key=lambda c: (-counts[c], c))


def row_reviews(verdicts: Iterable[Verdict], groups: Mapping[str, tuple[str, str | None]]) -> list[RowReview]:
    """One RowReview per judged row, in key order; ``groups`` maps a row key to (group, stage)."""
    rows: dict[str, RowReview] = {}
    for v in verdicts:
        group, stage = groups[v.key]
        r = rows.setdefault(v.key, RowReview(v.key, v.id, v.kind, group, v.check, stage))
        r.reviewers.append(v.reviewer)
        if v.verdict == "agree":
            r.agree += 1
        else:
            r.disagree += 1
            if v.code is not None and v.check == "kept":
                r.codes.append(v.code.value)
        if v.note.strip():
            r.notes.append(f"{v.reviewer}: {v.note.strip()}")
    return [rows[k] for k in sorted(rows)]


def _count(rows: Sequence[RowReview], hit: str) -> Rate:
    return Rate(sum(1 for r in rows if r.outcome == hit), len(rows))


def agreement(rows: Sequence[RowReview], verdicts: int) -> dict[str, Any]:
    """The agreement figures (JSON-ready); see the module docstring."""
    judged = [r for r in rows if r.outcome != "contested"]
    rejected = [r for r in judged if r.check != "kept"]
    kept = [r for r in judged if r.check == "kept"]
    precision = {code: _count([r for r in rejected if r.check == code], "agree").to_json()
                 for code in sorted({r.check for r in rejected})}
    missed = [r for r in kept if r.outcome == "disagree"]
    by_code = Counter(r.missed_code for r in missed)
    return {
        "verdicts": verdicts,
        "rows": len(rows),
        "contested": len(rows) - len(judged),
        "reviewers": sorted({name for r in rows for name in r.reviewers}),
        "agreement": _count(judged, "agree").to_json(),
        "precision": precision,
        "miss_rate": {
            "all": _count(kept, "disagree").to_json(),
            "by_group": {g: _count([r for r in kept if r.group == g], "disagree").to_json()
                         for g in sorted({r.group for r in kept})},
            "by_code": {c: Rate(by_code[c], len(kept)).to_json() for c in sorted(by_code)},
        },
    }
