"""Stage ``object_spatial``: spatial words agree with box geometry; laterality films carry and
respect their orientation.

Consumes ``kind``, ``content``, ``captions``, ``boxes`` (labels), ``boxes_xyxy`` (from
``object_boxes``; converted from ``boxes`` when absent), ``media`` (size, ``orientation``) and
``laterality``. Produces no column. Rejects:

- ``ERR_CROSS_MDL_MIRROR``: a ``laterality`` sample whose image ref has no ``orientation`` or is
  ``mirrored`` (its left/right no longer match the caption's).
- ``ERR_CROSS_MDL_OBJ_FLIP``: a relation stated in the content or an extra caption that the box
  centres contradict. Relative: "X (to/on the) left/right of Y", "above/over/atop",
  "below/under/beneath", "on top of", "in front of"/"behind" (ground-plane rule: the nearer object
  stands lower, so its box bottom is lower). Absolute: "on the left", "at the top", "in the top
  right corner" (against the image centre, with a neutral band). The detail says whether a
  horizontal or vertical mirror explains it (every relation on that axis reversed).

A mention names a box when exactly one box has that object and every stated colour; plural or
ambiguous mentions are skipped. Words match on word boundaries ("bright" is not "right").
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
from pydantic import Field, field_validator

from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.caption_markup import caption_texts
from stages.lexicon import DEFAULT_LEXICON, LabelProfile, Lexicon, Mention, lexicon_field, load_lexicon
from stages.object_boxes import image_size_of_row, row_boxes_xyxy
from stages.spatial_words import ABSOLUTE_RE, ABSOLUTE_WORDS, AXIS, FRAME_WORDS

_SENTENCE_RE = re.compile(r"[^.;!?\n]+")
_WORD_RE = re.compile(r"[A-Za-z]+")
_CONJUNCTION_GAP = re.compile(r"[\s,]*(?:and|but|while)?(?:\s+(?:is|are|also|it|sits))*[\s,]*",
                              re.IGNORECASE)
AXIS_NAMES = {"x": "horizontal", "y": "vertical", "depth": "vertical"}


class Claim(NamedTuple):
    """One stated relation: box ``subject`` is ``relation`` of box ``reference`` (None: of the
    image), with the sentence it came from."""

    subject: int
    relation: str
    reference: int | None
    sentence: str


def orientation_problem(media: list[dict[str, Any]] | None) -> str | None:
    """Why a laterality sample's image refs fail the orientation rule (None when they pass)."""
    images = [(i, ref) for i, ref in enumerate(media or [])
              if ref and ref.get("modality") == "image"]
    if not images:
        return "laterality sample without an image ref to carry its orientation"
    for i, ref in images:
        orientation = ref.get("orientation")
        if orientation is None:
            return f"laterality sample: image ref {i} has no orientation"
        if orientation != "canonical":
            return (f"laterality sample: image ref {i} is {orientation!r}; its left/right "
                    "no longer match the caption")
    return None


def _resolve(mention: Mention, profiles: list[LabelProfile], lexicon: Lexicon) -> int | None:
    if mention.plural or mention.negated:
        return None
    found = lexicon.matching_boxes(mention, profiles)
    return found[0] if len(found) == 1 else None


def sentence_claims(sentence: str, profiles: list[LabelProfile], check_depth: bool,
                    lexicon: Lexicon = DEFAULT_LEXICON) -> list[Claim]:
    """The checkable relations of one sentence (relation words: the lexicon's)."""
    mentions = [(m, _resolve(m, profiles, lexicon)) for m in lexicon.find_sample_mentions(sentence, profiles)]
    claims: list[Claim] = []
    masked = sentence

    def around(start: int, end: int) -> tuple[Mention | None, int | None, int | None, int | None]:
        """(nearest mention before, its box, the boxes of the next two mentions after)."""
        before = [(m, b) for m, b in mentions if m.end <= start]
        after = [b for m, b in mentions if m.start >= end]
        last, box = before[-1] if before else (None, None)
        return (last, box, after[0] if after else None, after[1] if len(after) > 1 else None)

    previous: tuple[int, int] | None = None  # (subject, end of the reference mention)
    for m in lexicon.relative_re.finditer(sentence):
        masked = masked[: m.start()] + " " * (m.end() - m.start()) + masked[m.end():]
        relation = lexicon.relative_relation(m)
        last, subject, nxt, nxt2 = around(m.start(), m.end())
        if (previous is not None and last is not None and last.end == previous[1]
                and _CONJUNCTION_GAP.fullmatch(sentence[last.end:m.start()])):
            subject = previous[0]  # "X is below Y and right of Z": X is right of Z
        tail = sentence[m.end():]
        first_after = next((mm.start for mm, _ in mentions if mm.start >= m.end()), len(sentence))
        frame_words = {w.lower() for w in _WORD_RE.findall(sentence[m.end():first_after])}
        if frame_words & FRAME_WORDS or not tail.strip():
            if subject is not None and AXIS[relation] != "depth":
                claims.append(Claim(subject, relation, None, sentence.strip()))
            continue
        if last is None:  # "Left of the square is a circle."
            subject = nxt2
        if subject is None or nxt is None or subject == nxt:
            continue
        reference_end = next(mm.end for mm, _ in mentions if mm.start >= m.end())
        previous = (subject, reference_end)
        if AXIS[relation] == "depth" and not check_depth:
            continue
        claims.append(Claim(subject, relation, nxt, sentence.strip()))
    for m in ABSOLUTE_RE.finditer(masked):
        last, subject, nxt, _ = around(m.start(), m.end())
        subject = nxt if last is None else subject  # "On the right is a circle."
        if subject is None:
            continue
        for word in (m.group("p1"), m.group("p2")):
            if word:
                claims.append(Claim(subject, ABSOLUTE_WORDS[word.lower()], None, sentence.strip()))
    return claims


def claim_violation(claim: Claim, boxes: list[list[float]], width: float, height: float,
                    margin: float, band: float) -> str | None:
    """Why the boxes contradict ``claim`` (None when they do not)."""
    x1, y1, x2, y2 = boxes[claim.subject]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rel = claim.relation
    if claim.reference is None:
        lo_x, hi_x = width / 2 - band * width, width / 2 + band * width
        lo_y, hi_y = height / 2 - band * height, height / 2 + band * height
        bad = {"left": cx > hi_x, "right": cx < lo_x, "above": cy > hi_y, "below": cy < lo_y}[rel]
        side = {"left": "right", "right": "left", "above": "bottom", "below": "top"}[rel]
        axis_c = (f"x={cx:g} of width {width:g}" if AXIS[rel] == "x"
                  else f"y={cy:g} of height {height:g}")
        return f"said {rel}, but its centre {axis_c} is in the {side} part" if bad else None
    r1, s1, r2, s2 = boxes[claim.reference]
    rcx, rcy = (r1 + r2) / 2, (s1 + s2) / 2
    checks = {
        "left": (cx - rcx, f"centre x {cx:g} is right of {rcx:g}"),
        "right": (rcx - cx, f"centre x {cx:g} is left of {rcx:g}"),
        "above": (cy - rcy, f"centre y {cy:g} is below {rcy:g}"),
        "below": (rcy - cy, f"centre y {cy:g} is above {rcy:g}"),
        "front": (s2 - y2, f"bottom y {y2:g} is above {s2:g} (farther)"),
        "behind": (y2 - s2, f"bottom y {y2:g} is below {s2:g} (nearer)"),
    }
    excess, why = checks[rel]
    return why if excess > margin else None


def flip_problem(claims: list[Claim], labels: list[str], boxes: list[list[float]], width: float,
                 height: float, margin: float, band: float) -> str | None:
    """The first contradicted claim, explained (None when every claim holds)."""
    results = [(c, claim_violation(c, boxes, width, height, margin, band)) for c in claims]
    for claim, why in results:
        if why is None:
            continue
        axis = AXIS[claim.relation]
        same_axis = [w for c, w in results if AXIS[c.relation] == axis]
        ref = f" of {labels[claim.reference]!r}" if claim.reference is not None else ""
        said = " ".join(claim.sentence.split())
        what = f"{labels[claim.subject]!r} is {claim.relation}{ref} in {said!r}"
        if all(w is not None for w in same_axis):
            cause = (f"a {AXIS_NAMES[axis]} mirror explains it "
                     "(image or boxes mirrored, caption not)")
        else:
            cause = "other relations on this axis hold, so it is not a plain mirror"
        return f"{what}, but {why}; {cause}"
    return None


class ObjectSpatialParams(StageParams):
    """Spatial consistency settings."""

    relation_margin_px: float = Field(
        default=2.0, ge=0, description="a relative relation is contradicted only beyond this many pixels")
    absolute_band: float = Field(
        default=0.1, ge=0, le=0.5,
        description="half-width (fraction of the image) of the centre band where absolute "
        "left/right/top/bottom claims are not judged")
    check_depth: bool = Field(default=True, description="check 'in front of'/'behind' (ground-plane rule)")
    check_orientation: bool = Field(default=True, description="apply the laterality orientation rule")
    lexicon: str | None = lexicon_field()

    @field_validator("lexicon")
    @classmethod
    def _lexicon_loads(cls, value: str | None) -> str | None:
        load_lexicon(value)
        return value


class ObjectSpatial(Stage):
    """Check spatial words and laterality orientation (see the module docstring)."""

    name: ClassVar[str] = "object_spatial"
    params_model: ClassVar[type[StageParams]] = ObjectSpatialParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=512)
    error_code: ClassVar[ReasonCode] = ReasonCode.OBJ_FLIP

    def __init__(self, params: StageParams | dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.lexicon = load_lexicon(self.params.lexicon)  # type: ignore[attr-defined]

    def process(self, rows: pa.Table) -> pa.Table:
        names = ["kind", "content", "captions", "boxes", "media", "laterality", "manifest_root"]
        if "boxes_xyxy" in rows.column_names:
            names.append("boxes_xyxy")
        verdicts = [self.check_row(row) for row in rows.select(names).to_pylist()]
        return reject_rows(rows, verdicts, self.name)

    def check_row(self, row: dict[str, Any]) -> Verdict | None:
        """The verdict for one row (as a dict of its columns)."""
        p: ObjectSpatialParams = self.params  # type: ignore[assignment]
        if row.get("kind") != "object":
            return None
        if p.check_orientation and row.get("laterality"):
            problem = orientation_problem(row.get("media"))
            if problem:
                return Verdict(ReasonCode.MIRROR, problem)
        labels = [(b or {}).get("label") or "" for b in row.get("boxes") or []]
        boxes = row_boxes_xyxy(row)
        size = image_size_of_row(row)
        if not labels or boxes is None or size is None or len(boxes) != len(labels):
            return None  # nothing checkable; box problems are object_boxes' verdict
        profiles = [self.lexicon.label_profile(label) for label in labels]
        claims: list[Claim] = []
        for text in caption_texts(row.get("content"), row.get("captions")):
            for sentence in _SENTENCE_RE.findall(text):
                claims.extend(sentence_claims(sentence, profiles, p.check_depth, self.lexicon))
        problem = flip_problem(claims, labels, boxes, float(size[0]), float(size[1]),
                               p.relation_margin_px, p.absolute_band)
        return Verdict(ReasonCode.OBJ_FLIP, problem) if problem else None
