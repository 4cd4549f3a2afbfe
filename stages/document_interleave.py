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

Tokens (``doc_tokens``, :mod:`stages.document_tokens`): each placeholder marker is one token;
the text between markers is counted by ``tokenizer``: ``whitespace`` (words) or the path of a
``tokenizers`` JSON file. Units, their checks and their rendering: :mod:`stages.document_units`.

Rejects: ``ERR_CROSS_MDL_SCHEMA`` (no items, a media item whose ``media_index`` is missing,
out of range, reused or of another modality, a media ref that no item places),
``ERR_CROSS_MDL_MEDIA`` (``assign``: an image that cannot be read or decoded).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from access.io import read_bytes, resolve_media_uri
from schemas.placeholder_grammar import span
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.document_order import reading_order, window_ranges
from stages.document_similarity import Similarity, load_similarity, split_sentences
from stages.document_tokens import TokenCounter
from stages.document_units import Unit, bonds, check_items, render

TIE_BREAK = 1e-4  # weight of the layout distance in the assignment cost: decides ties only


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
