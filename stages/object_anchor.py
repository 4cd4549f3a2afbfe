"""Stage ``object_anchor``: ``<box>label</box>`` tags in ``content`` and the sample's boxes agree.

Consumes ``kind``, ``content`` and ``boxes[].label``. Produces no column. Rejects with
``ERR_CROSS_MDL_OBJ_ANCHOR`` an object row whose content has an unclosed, stray, nested or empty
``<box>`` tag, a tag naming a label that no box has, or (``untagged_mentions``) a box label that
the caption mentions as plain text without ever tagging it. Labels compare case-insensitively
with whitespace collapsed unless ``case_sensitive``. Rows of other kinds pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.object_lexicon import BOX_TAG_RE, strip_markup

_ANY_TAG_RE = re.compile(r"</?box>", re.IGNORECASE)


def normalise_label(label: str, case_sensitive: bool = False) -> str:
    text = " ".join(label.split())
    return text if case_sensitive else text.casefold()


def parse_box_tags(content: str) -> tuple[list[str], str | None]:
    """(labels of well-formed ``<box>x</box>`` tags in order, problem or None). The problem
    names the first malformed tag: nested, empty, unclosed or stray."""
    labels: list[str] = []
    for m in BOX_TAG_RE.finditer(content):
        inner = m.group(1)
        if _ANY_TAG_RE.search(inner):
            return labels, f"nested <box> tag at character {m.start()}"
        if not inner.strip():
            return labels, f"empty <box></box> tag at character {m.start()}"
        labels.append(inner)
    leftover = _ANY_TAG_RE.search(BOX_TAG_RE.sub(lambda m: " " * len(m.group(0)), content))
    if leftover:
        kind = "unclosed" if leftover.group(0).lower() == "<box>" else "stray"
        return labels, f"{kind} {leftover.group(0)} tag at character {leftover.start()}"
    return labels, None


def untagged_text(content: str) -> str:
    """Caption text of ``content`` with tagged words blanked out (only plain mentions remain)."""
    return strip_markup(BOX_TAG_RE.sub(lambda m: " " * len(m.group(0)), content))


def label_mentioned(label: str, text: str, case_sensitive: bool) -> bool:
    words = [re.escape(w) for w in label.split()]
    if not words:
        return False
    pattern = r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"
    return re.search(pattern, text, 0 if case_sensitive else re.IGNORECASE) is not None


def anchor_problem(content: str | None, box_labels: Sequence[str], untagged_mentions: str,
                   case_sensitive: bool = False) -> str | None:
    """Why the tags of ``content`` and the box labels disagree (None when they agree)."""
    if not content:
        return None
    tags, problem = parse_box_tags(content)
    if problem:
        return problem
    known = {normalise_label(b, case_sensitive): b for b in box_labels}
    for tag in tags:
        if normalise_label(tag, case_sensitive) not in known:
            have = ", ".join(repr(b) for b in box_labels) or "none"
            return f"tag <box>{tag}</box> names a label that no box has (boxes: {have})"
    if untagged_mentions == "ignore" or (untagged_mentions == "when_tagged" and not tags):
        return None
    tagged = {normalise_label(t, case_sensitive) for t in tags}
    plain = untagged_text(content)
    for norm, label in known.items():
        if norm not in tagged and label_mentioned(label, plain, case_sensitive):
            return f"box label {label!r} is mentioned in the caption but never tagged"
    return None


class ObjectAnchorParams(StageParams):
    """Anchoring settings."""

    untagged_mentions: Literal["ignore", "when_tagged", "always"] = Field(
        default="when_tagged",
        description="reject a box label mentioned but never tagged: never, only when the "
        "content uses <box> tags at all (default), or always")
    case_sensitive: bool = Field(default=False, description="compare tag and box labels case-sensitively")


class ObjectAnchor(Stage):
    """Check ``<box>`` anchoring (see the module docstring)."""

    name: ClassVar[str] = "object_anchor"
    params_model: ClassVar[type[StageParams]] = ObjectAnchorParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=1024)
    error_code: ClassVar[ReasonCode] = ReasonCode.OBJ_ANCHOR

    def process(self, rows: pa.Table) -> pa.Table:
        p: ObjectAnchorParams = self.params  # type: ignore[assignment]
        verdicts: list[Verdict | None] = []
        cols = rows.select(["kind", "content", "boxes"]).to_pydict()
        for kind, content, boxes in zip(cols["kind"], cols["content"], cols["boxes"], strict=True):
            verdicts.append(self._check(kind, content, boxes or [], p))
        return reject_rows(rows, verdicts, self.name)

    @staticmethod
    def _check(kind: str | None, content: str | None, boxes: list[dict[str, Any]],
               p: ObjectAnchorParams) -> Verdict | None:
        if kind != "object":
            return None
        labels = [b["label"] for b in boxes if b and b.get("label")]
        problem = anchor_problem(content, labels, p.untagged_mentions, p.case_sensitive)
        return Verdict(ReasonCode.OBJ_ANCHOR, problem) if problem else None
