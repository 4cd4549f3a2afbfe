"""Stage ``document_interleave``: reading order, image placement, token windows, ``content``.

Consumes ok ``document`` rows whose ``content`` is empty: ``items`` (page, bbox, text or
``media_index``), ``media``, ``manifest_root`` (assign mode reads the images). Other rows, and
documents that already have content, pass unchanged.

Produces, per document:

* the items in reading order (:mod:`stages.document_order`: page, then column-aware layout);
* image placement: ``layout`` keeps each image where the layout puts it; ``assign`` (MMC4
  style) scores every image against every sentence, drops images whose best score is below
  ``min_similarity``, and assigns the rest with ``scipy.optimize.linear_sum_assignment`` (at
  most one image per sentence; ties go to the sentence nearest the image's layout position),
  inserting the span right ``before`` (or ``after``) its sentence. Audio stays where the layout
  puts it;
* ``content``: paragraphs and spans in that order, separated by blank lines, spans in grammar
  v1 (pad tokens, ``num_tokens`` of the ref or ``pad_tokens``); ``media`` reordered to span
  order (images dropped by ``assign`` removed, their URIs in ``doc_dropped_media``); ``items``
  rewritten in content order with ``media_index`` remapped (an image placed inside a paragraph
  is listed next to that paragraph);
* token windows: with ``max_tokens`` set, a longer document is cut at paragraph boundaries
  (never inside a span, never between an image and the paragraph that refers to it: a
  ``Figure k`` on its page, else the next paragraph on its page, else the previous one) and
  packed greedily. The source row keeps the whole document and gets ``doc_windows`` = number
  of windows; each window is a fan-out row ``<id>-w<k>`` (``parent_id`` = the document id,
  ``doc_window`` = k, from 0) with its own content, media and items. A document that fits is
  written in place (``doc_windows`` = 1, no fan-out). Consumers training under the budget
  take rows with ``doc_windows`` = 1 or with ``doc_window`` set. A single paragraph longer than
  the budget becomes a window of its own (``doc_tokens`` shows it).

Tokens (``doc_tokens``): each placeholder marker is one token; the text between markers is
counted by ``tokenizer``: ``whitespace`` (words) or the path of a ``tokenizers`` JSON file.

Rejects: ``ERR_CROSS_MDL_SCHEMA`` (no items, a media item whose ``media_index`` is missing,
out of range, reused or of another modality, a media ref that no item places),
``ERR_CROSS_MDL_MEDIA`` (``assign``: an image that cannot be read or decoded).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from access.io import read_bytes, resolve_media_uri
from schemas.placeholder_grammar import span
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.document_order import reading_order, window_ranges
from stages.document_similarity import Similarity, load_similarity, split_sentences

MARKER_PATTERN = r"<\|(?:image|audio|video)_(?:start|end|pad)\|>|<(?:IMG|AUD|VID)_TK_[0-9]+>|</?box>"
WORD_PATTERN = r"[^\s\v\p{Z}]+"  # RE2: a word is a run of anything but whitespace and Unicode spaces
FIGURE_REF = re.compile(r"\b(?:fig(?:ure)?\.?|image)\s*(\d+)", re.IGNORECASE)
TIE_BREAK = 1e-4  # weight of the layout distance in the assignment cost: decides ties only


class TokenCounter:
    """Token counts of texts with placeholders: a marker is one token, the rest goes to the
    tokenizer (``whitespace`` or a ``tokenizers`` JSON file; nothing is downloaded)."""

    def __init__(self, tokenizer: str = "whitespace") -> None:
        self.name = tokenizer
        self._hf: Any = None
        if tokenizer != "whitespace":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(tokenizer)

    def count_column(self, content: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Vectorised counts of a string column (null counts 0)."""
        markers = pc.fill_null(pc.count_substring_regex(content, MARKER_PATTERN), 0).to_numpy(zero_copy_only=False)
        if self._hf is None:
            text = pc.replace_substring_regex(content, MARKER_PATTERN, " ")
            words = pc.fill_null(pc.count_substring_regex(text, WORD_PATTERN), 0)
            return np.asarray(markers, np.int64) + words.to_numpy(zero_copy_only=False).astype(np.int64)
        texts = [re.sub(MARKER_PATTERN, " ", t or "") for t in content.to_pylist()]
        lengths = [len(e.ids) for e in self._hf.encode_batch(texts, add_special_tokens=False)]
        return np.asarray(markers, np.int64) + np.asarray(lengths, np.int64)

    def count(self, texts: Sequence[str]) -> list[int]:
        return self.count_column(pa.array(list(texts), pa.string())).tolist() if texts else []


@dataclass
class Unit:
    """One paragraph (with any images placed inside it) or one media item, in final order."""

    text: str
    item: dict[str, Any]
    media: list[int] = field(default_factory=list)  # original media indices, in content order
    inline: list[dict[str, Any]] = field(default_factory=list)  # image items placed inside
    inline_before: bool = True  # inline image items are listed before the paragraph's item


class DocumentInterleaveParams(StageParams):
    placement: Literal["layout", "assign"] = Field(
        default="layout", description="layout: images stay where the layout puts them; assign: MMC4-style assignment")
    similarity: Literal["clip", "shape_colour_rules"] = Field(
        default="clip", description="assign's image x sentence similarity; shape_colour_rules is a test/demo stand-in")
    clip_checkpoint: str | None = Field(
        default=None, description="similarity=clip: local dir, s3://bucket/prefix or hf:org/name")
    clip_checkpoint_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the checkpoint's weights file")
    min_similarity: float = Field(
        default=0.15, description="assign: an image whose best sentence scores below this is dropped")
    assign_side: Literal["before", "after"] = Field(
        default="before", description="assign: the span goes right before or after its sentence")
    max_tokens: int | None = Field(
        default=None, gt=0, description="context budget; longer documents are split into windows (None: never)")
    tokenizer: str = Field(default="whitespace", description="'whitespace' or the path of a tokenizers JSON file")
    pad_tokens: int = Field(default=1, gt=0, description="pad tokens of a span whose media ref has no num_tokens")

    @model_validator(mode="after")
    def _clip_checkpoint(self) -> DocumentInterleaveParams:
        if self.placement == "assign" and self.similarity == "clip":
            if not self.clip_checkpoint:
                raise ValueError("placement=assign with similarity=clip needs clip_checkpoint "
                                 "(or similarity=shape_colour_rules, the test/demo stand-in)")
            from access.models import resolve_checkpoint

            resolve_checkpoint(self.clip_checkpoint, self.clip_checkpoint_sha256)  # fails fast, before data
        return self


class DocumentInterleave(Stage):
    """Reading order + placement + windows + content (see the module docstring)."""

    name: ClassVar[str] = "document_interleave"
    params_model: ClassVar[type[StageParams]] = DocumentInterleaveParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=64)
    output_fields: ClassVar[list[pa.Field]] = [
        pa.field("doc_windows", pa.int32()),
        pa.field("doc_window", pa.int32()),
        pa.field("doc_tokens", pa.int64()),
        pa.field("doc_dropped_media", pa.list_(pa.string())),
    ]
    error_code: ClassVar[ReasonCode] = ReasonCode.SCHEMA

    def __init__(self, params: StageParams | dict[str, Any] | None = None,
                 similarity: Similarity | None = None) -> None:
        """``similarity``, when given, replaces the one named in the params (library use)."""
        super().__init__(params)
        self._similarity = similarity

    def setup(self) -> None:
        p: DocumentInterleaveParams = self.params  # type: ignore[assignment]
        self.counter = TokenCounter(p.tokenizer)
        if p.placement == "assign" and self._similarity is None:
            self._similarity = load_similarity(p.similarity, p.clip_checkpoint, p.clip_checkpoint_sha256)

    def process(self, rows: pa.Table) -> pa.Table:
        out: list[dict[str, Any]] = []
        fan_out: list[dict[str, Any]] = []
        verdicts: list[Verdict | None] = []
        for row in rows.to_pylist():
            result = self.interleave_row(row) if row.get("kind") == "document" and not row.get("content") else None
            if isinstance(result, Verdict):
                verdicts.append(result)
                out.append(row)
                continue
            verdicts.append(None)
            if result is None:
                out.append(row)
            else:
                out.append(result[0])
                fan_out.extend(result[1])
        table = reject_rows(pa.Table.from_pylist(out, schema=rows.schema), verdicts, self.name)
        if not fan_out:
            return table
        return pa.concat_tables([table, pa.Table.from_pylist(fan_out, schema=rows.schema)])

    def interleave_row(self, row: dict[str, Any]) -> Verdict | tuple[dict[str, Any], list[dict[str, Any]]]:
        """The rewritten row and its window rows, or the verdict that rejects it."""
        p: DocumentInterleaveParams = self.params  # type: ignore[assignment]
        items: list[dict[str, Any]] = [i for i in (row.get("items") or []) if i is not None]
        media: list[dict[str, Any]] = row.get("media") or []
        problem = check_items(items, media)
        if problem:
            return Verdict(ReasonCode.SCHEMA, problem)
        order = reading_order([i.get("page") or 0 for i in items], [i.get("bbox") for i in items])
        units = [
            Unit(text=it["text"], item=it) if it["type"] == "text" else Unit("", it, media=[it["media_index"]])
            for it in (items[k] for k in order)
            if it["type"] != "text" or (it.get("text") or "").strip()
        ]
        dropped: list[int] = []
        if p.placement == "assign":
            placed = self.assign_images(row, units)
            if isinstance(placed, Verdict):
                return placed
            units, dropped = placed
        for unit in units:
            if unit.item["type"] != "text":
                ref = media[unit.media[0]]
                unit.text = span(ref["modality"], ref.get("num_tokens") or p.pad_tokens)
        unit_tokens = self.counter.count([u.text for u in units])
        windows = window_ranges(unit_tokens, bonds(units), p.max_tokens)
        dropped_uris = [media[i]["uri"] for i in dropped]
        whole = {**row, **render(units, media), "doc_windows": len(windows), "doc_window": None,
                 "doc_tokens": sum(unit_tokens), "doc_dropped_media": dropped_uris}
        fan_out = []
        if len(windows) > 1:
            for k, (a, b) in enumerate(windows):
                fan_out.append({**whole, **render(units[a:b], media), "id": f"{row['id'][:120]}-w{k}",
                                "parent_id": row["id"], "doc_window": k, "doc_tokens": sum(unit_tokens[a:b]),
                                "doc_dropped_media": []})
        return whole, fan_out

    def assign_images(self, row: dict[str, Any], units: list[Unit]) -> Verdict | tuple[list[Unit], list[int]]:
        """Move each image unit into the paragraph of its assigned sentence; return the new
        units and the media indices of the dropped images."""
        from scipy.optimize import linear_sum_assignment

        p: DocumentInterleaveParams = self.params  # type: ignore[assignment]
        image_at = [i for i, u in enumerate(units) if u.item["type"] == "image"]
        if not image_at:
            return units, []
        images = []
        for i in image_at:
            ref = (row.get("media") or [])[units[i].media[0]]
            try:
                images.append(decode_rgb(read_bytes(resolve_media_uri(ref["uri"], row.get("manifest_root")))))
            except (OSError, ValueError) as err:
                return Verdict(ReasonCode.MEDIA, f"cannot read image {ref['uri']}: {err}"[:500])
        sentences = [(u, a, b) for u, unit in enumerate(units) if unit.item["type"] == "text"
                     for a, b in split_sentences(unit.text)]
        sim = np.zeros((len(images), 0))
        if sentences and self._similarity is not None:
            sim = np.asarray(self._similarity(images, [units[u].text[a:b] for u, a, b in sentences]), np.float64)
            if sim.shape != (len(images), len(sentences)):
                raise ValueError(f"similarity returned shape {sim.shape}, expected {(len(images), len(sentences))}")
        keep = np.flatnonzero(sim.max(axis=1) >= p.min_similarity) if sim.size else np.array([], int)
        assigned: dict[int, int] = {}  # sentence -> image (index into image_at)
        if len(keep):
            distance = np.abs(np.array(image_at)[keep, None] - np.array([s[0] for s in sentences])[None, :])
            cost = -sim[keep] + TIE_BREAK * distance / max(1, len(units))
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                assigned[int(c)] = int(keep[r])
        placed_images = set(assigned.values())
        dropped = [units[image_at[k]].media[0] for k in range(len(image_at)) if k not in placed_images]
        by_unit: dict[int, list[tuple[int, int]]] = {}
        for s, k in assigned.items():
            u, a, b = sentences[s]
            by_unit.setdefault(u, []).append((a if p.assign_side == "before" else b, k))
        media = row.get("media") or []
        for u, inserts in by_unit.items():
            unit, text, pos = units[u], "", 0
            unit.inline_before = p.assign_side == "before"
            for at, k in sorted(inserts):
                image = units[image_at[k]]
                ref = media[image.media[0]]
                image_span = span("image", ref.get("num_tokens") or p.pad_tokens)
                text += unit.text[pos:at] + (image_span + " " if p.assign_side == "before" else " " + image_span)
                pos = at
                unit.media.append(image.media[0])
                unit.inline.append(image.item)
            unit.text = text + unit.text[pos:]
        moved = set(image_at)
        return [u for i, u in enumerate(units) if i not in moved], dropped


def decode_rgb(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("undecodable image")
    return np.ascontiguousarray(image[:, :, ::-1])


def check_items(items: list[dict[str, Any]], media: list[dict[str, Any]]) -> str | None:
    """What makes a document's items unusable, or None."""
    if not items:
        return "document has no items"
    used: set[int] = set()
    for n, item in enumerate(items):
        kind = item.get("type")
        if kind == "text":
            continue
        idx = item.get("media_index")
        if idx is None or not 0 <= idx < len(media) or media[idx] is None:
            return f"items[{n}] ({kind}) has media_index {idx}, but the row has {len(media)} media ref(s)"
        if idx in used:
            return f"items[{n}] places media ref {idx} a second time"
        if media[idx].get("modality") != kind:
            return f"items[{n}] is {kind} but media ref {idx} is {media[idx].get('modality')}"
        used.add(idx)
    missing = [i for i in range(len(media)) if i not in used]
    return f"media ref(s) {missing} placed by no item" if missing else None


def bonds(units: list[Unit]) -> list[tuple[int, int]]:
    """Unit ranges a window must not cut: a media unit and the paragraph that refers to it."""
    out = []
    text_at = [i for i, u in enumerate(units) if u.item["type"] == "text"]
    ordinal = 0
    for i, unit in enumerate(units):
        if unit.item["type"] == "text":
            continue
        ordinal += unit.item["type"] == "image"
        page = unit.item.get("page")
        same_page = [j for j in text_at if units[j].item.get("page") == page]
        refs = [j for j in same_page if unit.item["type"] == "image"
                and any(int(m) == ordinal for m in FIGURE_REF.findall(units[j].text))]
        after = [j for j in same_page if j > i]
        before = [j for j in same_page if j < i]
        target = min(refs, key=lambda j: abs(j - i)) if refs else after[0] if after else before[-1] if before else None
        if target is not None:
            out.append((min(i, target), max(i, target)))
    return out


def render(units: Sequence[Unit], media: list[dict[str, Any]]) -> dict[str, Any]:
    """``content``, ``media`` (span order) and ``items`` (content order, remapped) of units."""
    order = [m for u in units for m in u.media]
    new_index = {old: new for new, old in enumerate(order)}
    items: list[dict[str, Any]] = []
    for u in units:
        inline = [{**it, "media_index": new_index[it["media_index"]]} for it in u.inline]
        own = u.item if u.item["type"] == "text" else {**u.item, "media_index": new_index[u.item["media_index"]]}
        items.extend(inline + [own] if u.inline and u.inline_before else [own] + inline)
    return {"content": "\n\n".join(u.text for u in units), "media": [media[m] for m in order], "items": items}
