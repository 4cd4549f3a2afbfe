"""Stage ``object_hallucination``: captions name only objects the boxes contain (CHAIR).

Consumes ``kind``, ``content`` (markup stripped), ``captions`` and ``boxes[].label``. Produces
``chair_i`` (hallucinated mentions / all object mentions of the sample; null without mentions)
and ``chair_s`` (captions with a hallucination / all captions; null without captions), both
null on rows that are not object rows or have no boxes (nothing to hold a caption against).
Rejects with ``ERR_CROSS_MDL_HALLUCINATION`` an object row whose ``chair_s`` exceeds
``max_chair_s`` or whose ``chair_i`` exceeds ``max_chair_i`` (default: any caption naming an
absent object).

Caption nouns map to canonical object names through the lexicon (``stages.lexicon``: synonyms,
plurals, two-word names; the built-in words plus the ``lexicon`` file, if given); box labels map
the same way ("small red circle" -> circle). A mention
is hallucinated when no box has its canonical object or, with ``match_colours``, when no box of
that object has every colour the mention states ("a blue circle" beside a red one). Negated
mentions ("no dog") are not counted. :func:`chair_totals` gives the batch-level CHAIR-i and
CHAIR-s for the metrics step (totals, not averages of per-sample ratios).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator

from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.caption_markup import caption_texts
from stages.lexicon import DEFAULT_LEXICON, LabelProfile, Lexicon, lexicon_field, load_lexicon


@dataclass
class ChairCounts:
    """Mention and caption counts behind CHAIR-i and CHAIR-s (add them up across samples)."""

    mentions: int = 0
    hallucinated_mentions: int = 0
    captions: int = 0
    hallucinated_captions: int = 0
    hallucinated_objects: Counter[str] = field(default_factory=Counter)
    first: str | None = None  # first hallucinated mention, e.g. "caption 2: 'green triangle'"

    @property
    def chair_i(self) -> float | None:
        return self.hallucinated_mentions / self.mentions if self.mentions else None

    @property
    def chair_s(self) -> float | None:
        return self.hallucinated_captions / self.captions if self.captions else None

    def add(self, other: ChairCounts) -> None:
        self.mentions += other.mentions
        self.hallucinated_mentions += other.hallucinated_mentions
        self.captions += other.captions
        self.hallucinated_captions += other.hallucinated_captions
        self.hallucinated_objects.update(other.hallucinated_objects)


def caption_hallucinations(text: str, profiles: list[LabelProfile], match_colours: bool,
                           lexicon: Lexicon = DEFAULT_LEXICON) -> tuple[int, list[str]]:
    """(number of object mentions, the hallucinated ones as written) in one caption."""
    total, bad = 0, []
    canonicals = {p.canonical for p in profiles}
    for m in lexicon.find_object_mentions(text):
        if m.negated:
            continue
        total += 1
        found = lexicon.matching_boxes(m, profiles) if match_colours else (
            [0] if m.canonical in canonicals else [])
        if not found:
            bad.append(" ".join([*m.modifiers, text[m.start:m.end]]))
    return total, bad


def sample_chair(content: str | None, captions: Iterable[str | None] | None,
                 labels: Iterable[str], match_colours: bool = True,
                 lexicon: Lexicon = DEFAULT_LEXICON) -> ChairCounts:
    """CHAIR counts of one sample: the content is caption 0, extra captions follow."""
    profiles = [lexicon.label_profile(label) for label in labels if label]
    counts = ChairCounts()
    for index, text in enumerate(caption_texts(content, captions)):
        total, bad = caption_hallucinations(text, profiles, match_colours, lexicon)
        counts.captions += 1
        counts.mentions += total
        if bad:
            counts.hallucinated_captions += 1
            counts.hallucinated_mentions += len(bad)
            counts.hallucinated_objects.update(b.lower() for b in bad)
            if counts.first is None:
                counts.first = f"caption {index}: {bad[0]!r}"
    return counts


def chair_totals(rows: pa.Table, match_colours: bool = True,
                 lexicon: Lexicon = DEFAULT_LEXICON) -> tuple[ChairCounts, ChairCounts]:
    """Batch-level CHAIR over the object rows of ``rows``, in one pass: (ok rows, all rows).
    ``.chair_i`` and ``.chair_s`` are ratios of totals."""
    kept, everything = ChairCounts(), ChairCounts()
    names = ["kind", "status", "content", "captions", "boxes"]
    for row in (r for batch in rows.select(names).to_batches(max_chunksize=1024) for r in batch.to_pylist()):
        if row["kind"] != "object":
            continue
        labels = [(b or {}).get("label") or "" for b in row["boxes"] or []]
        if labels:
            counts = sample_chair(row["content"], row["captions"], labels, match_colours, lexicon)
            everything.add(counts)
            if row["status"] == STATUS_OK:
                kept.add(counts)
    return kept, everything


class ObjectHallucinationParams(StageParams):
    """CHAIR thresholds; a sample is rejected when a rate is strictly above its maximum."""

    max_chair_s: float = Field(
        default=0.0, ge=0, le=1, description="largest allowed share of the sample's captions with a "
        "hallucination (0: any caption naming an absent object rejects the sample)")
    max_chair_i: float = Field(
        default=1.0, ge=0, le=1, description="largest allowed share of hallucinated object mentions")
    match_colours: bool = Field(
        default=True, description="a mention's colour words must match a box of that object")
    lexicon: str | None = lexicon_field()

    @field_validator("lexicon")
    @classmethod
    def _lexicon_loads(cls, value: str | None) -> str | None:
        load_lexicon(value)
        return value


class ObjectHallucination(Stage):
    """Per-sample CHAIR and rejection (see the module docstring)."""

    name: ClassVar[str] = "object_hallucination"
    params_model: ClassVar[type[StageParams]] = ObjectHallucinationParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=1024)
    output_fields: ClassVar[list[pa.Field]] = [pa.field("chair_i", pa.float64()),
                                               pa.field("chair_s", pa.float64())]
    error_code: ClassVar[ReasonCode] = ReasonCode.HALLUCINATION

    def __init__(self, params: StageParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.lexicon = load_lexicon(self.params.lexicon)  # type: ignore[attr-defined]

    def process(self, rows: pa.Table) -> pa.Table:
        p: ObjectHallucinationParams = self.params  # type: ignore[assignment]
        chair_i: list[float | None] = []
        chair_s: list[float | None] = []
        verdicts: list[Verdict | None] = []
        for row in rows.select(["kind", "content", "captions", "boxes"]).to_pylist():
            counts, verdict = self._check(row, p, self.lexicon)
            chair_i.append(counts.chair_i if counts else None)
            chair_s.append(counts.chair_s if counts else None)
            verdicts.append(verdict)
        for name, values in (("chair_i", chair_i), ("chair_s", chair_s)):
            idx = rows.schema.get_field_index(name)
            column = pa.array(values, pa.float64())
            rows = rows.set_column(idx, pa.field(name, pa.float64()), column)
        return reject_rows(rows, verdicts, self.name)

    @staticmethod
    def _check(row: dict[str, Any], p: ObjectHallucinationParams, lexicon: Lexicon = DEFAULT_LEXICON
               ) -> tuple[ChairCounts | None, Verdict | None]:
        labels = [(b or {}).get("label") or "" for b in row["boxes"] or []]
        if row["kind"] != "object" or not labels:
            return None, None  # no annotations: nothing to hold a caption against
        counts = sample_chair(row["content"], row["captions"], labels, p.match_colours, lexicon)
        ci, cs = counts.chair_i or 0.0, counts.chair_s or 0.0
        if cs > p.max_chair_s or ci > p.max_chair_i:
            have = ", ".join(repr(label) for label in labels) or "none"
            detail = (f"{counts.first} names an object no box has (boxes: {have}); "
                      f"CHAIR-s {cs:.2f} (max {p.max_chair_s:g}), CHAIR-i {ci:.2f} "
                      f"(max {p.max_chair_i:g})")
            return counts, Verdict(ReasonCode.HALLUCINATION, detail)
        return counts, None
