"""The fault catalogue of the sample world and the seeded choice of which record gets which.

Each fault has a snake_case name, the reason code a correct pipeline must give it, and the
records it may be injected into. A fault changes exactly one thing, so a faulty record has one
reason to fail; laterality images only ever receive the MIRROR faults, so that no other fault
is confounded with their orientation.

Faults act at one of three moments: ``render`` (the media are drawn differently: flip, audio
offset, silence, black video, NaN features, subtitle edits), ``record`` (the record dict is
edited after rendering, see :mod:`pipeline.world.fault_edits`; this includes a segment's audio
or subtitles replaced by another clip's, the offset-by-one bug, ``LOW_SCORE``) or ``line`` (the
JSON line is truncated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.world.documents import DocumentSpec
from pipeline.world.objects import ObjectScene
from pipeline.world.segments import SegmentScene
from pipeline.world.texts import TextSpec
from schemas.reason_codes import ReasonCode

SceneSpec = ObjectScene | SegmentScene | DocumentSpec | TextSpec


@dataclass(frozen=True)
class PlannedRecord:
    """A record before rendering: its id, kind and the scene it will be drawn from."""

    record_id: str
    kind: str
    spec: SceneSpec


@dataclass(frozen=True)
class FaultKind:
    """One kind of injected defect and the reason code it must be rejected with."""

    name: str
    code: ReasonCode
    moment: str  # "render" | "record" | "line"
    accepts: Callable[[PlannedRecord], bool]


def _plain_object(record: PlannedRecord) -> bool:
    return isinstance(record.spec, ObjectScene) and not record.spec.laterality


def _laterality_object(record: PlannedRecord) -> bool:
    return isinstance(record.spec, ObjectScene) and record.spec.laterality


def _segment(record: PlannedRecord) -> bool:
    return isinstance(record.spec, SegmentScene)


def _document(record: PlannedRecord) -> bool:
    return isinstance(record.spec, DocumentSpec)


def _any_but_laterality(record: PlannedRecord) -> bool:
    return not _laterality_object(record)


def _with_media(record: PlannedRecord) -> bool:
    return _plain_object(record) or _segment(record) or _document(record)


def _with_image_file(record: PlannedRecord) -> bool:
    return _plain_object(record) or _document(record)


def _with_spans(record: PlannedRecord) -> bool:
    return _plain_object(record) or _segment(record)


def _flippable_object(record: PlannedRecord) -> bool:
    return _plain_object(record) and isinstance(record.spec, ObjectScene) and (
        record.spec.has_horizontal_relation
    )


_S, _M, _T = ReasonCode.SCHEMA, ReasonCode.MEDIA, ReasonCode.TOKEN_FMT
FAULT_KINDS: tuple[FaultKind, ...] = (
    FaultKind("content_not_string", _S, "record", _any_but_laterality),
    FaultKind("missing_kind", _S, "record", _any_but_laterality),
    FaultKind("truncated_json_line", _S, "line", _any_but_laterality),
    FaultKind("path_traversal_uri", _M, "record", _with_media),
    FaultKind("sha256_mismatch", _M, "record", _with_media),
    FaultKind("missing_media_file", _M, "record", _with_media),
    FaultKind("undecodable_image", _M, "record", _with_image_file),
    FaultKind("html_escaped_sentinel", _T, "record", _with_spans),
    FaultKind("unicode_escaped_sentinel", _T, "record", _with_spans),
    FaultKind("fullwidth_sentinel", _T, "record", _with_spans),
    FaultKind("missing_start_sentinel", _T, "record", _with_spans),
    FaultKind("out_of_vocab_token", _T, "record", _with_spans),
    FaultKind("num_tokens_mismatch", _T, "record", _with_spans),
    FaultKind("mixed_pad_and_token_body", _T, "record", _with_spans),
    FaultKind("nested_spans", _T, "record", _segment),
    FaultKind("box_tag_in_span", _T, "record", _plain_object),
    FaultKind("box_outside_image", ReasonCode.OBJ_BBOX, "record", _plain_object),
    FaultKind("box_inverted", ReasonCode.OBJ_BBOX, "record", _plain_object),
    FaultKind("box_nan_coordinate", ReasonCode.OBJ_BBOX, "record", _plain_object),
    FaultKind("box_zero_area", ReasonCode.OBJ_BBOX, "record", _plain_object),
    FaultKind("box_tag_unknown_label", ReasonCode.OBJ_ANCHOR, "record", _plain_object),
    FaultKind("mirrored_image_and_boxes", ReasonCode.OBJ_FLIP, "render", _flippable_object),
    FaultKind("laterality_orientation_missing", ReasonCode.MIRROR, "record", _laterality_object),
    FaultKind("laterality_orientation_mirrored", ReasonCode.MIRROR, "record", _laterality_object),
    FaultKind("caption_names_absent_object", ReasonCode.HALLUCINATION, "record", _plain_object),
    FaultKind("audio_offset", ReasonCode.TEMPORAL, "render", _segment),
    FaultKind("subtitles_reversed", ReasonCode.TEMPORAL, "render", _segment),
    FaultKind("subtitle_after_end", ReasonCode.TEMPORAL, "render", _segment),
    FaultKind("silent_audio", ReasonCode.FUSION, "render", _segment),
    FaultKind("black_video", ReasonCode.FUSION, "render", _segment),
    FaultKind("nan_features", ReasonCode.FUSION, "render", _segment),
    FaultKind("audio_from_other_clip", ReasonCode.LOW_SCORE, "record", _segment),
    FaultKind("subtitle_from_other_clip", ReasonCode.LOW_SCORE, "record", _segment),
)
FAULTS_BY_NAME: dict[str, FaultKind] = {fault.name: fault for fault in FAULT_KINDS}


def plan_faults(
    records: Sequence[PlannedRecord], fault_rate: float, rng: np.random.Generator
) -> dict[str, FaultKind]:
    """Choose ``round(len(records) * fault_rate)`` records and one fault for each.

    Fault kinds are taken round-robin in a seeded order, so that every kind appears once before
    any appears twice; a kind with no eligible record left is skipped. The record for a kind is
    drawn uniformly among the eligible records that have no fault yet.
    """
    wanted = min(len(records), int(round(len(records) * fault_rate)))
    order = [FAULT_KINDS[int(index)] for index in rng.permutation(len(FAULT_KINDS))]
    chosen: dict[str, FaultKind] = {}
    turn = 0
    kinds_without_candidates = 0
    while len(chosen) < wanted and kinds_without_candidates < len(order):
        fault = order[turn % len(order)]
        turn += 1
        candidates = [r for r in records if r.record_id not in chosen and fault.accepts(r)]
        if not candidates:
            kinds_without_candidates += 1
            continue
        kinds_without_candidates = 0
        chosen[candidates[int(rng.integers(len(candidates)))].record_id] = fault
    return chosen


def truncate_json_line(line: str) -> str:
    """Cut a serialised record in its middle: not JSON any more, but it still starts with
    ``{"id": "<id>", `` so that a reader can salvage the id."""
    id_end = line.index('", ') + 3
    return line[: max(id_end + 8, len(line) // 2)]
