"""Record format v1: typed input models (validation + JSON Schema) and the Arrow row schema.

The pydantic models validate one input record and name the failing field; the Arrow schema is
what every stage receives and returns. ``tests/schemas/test_records.py`` checks that the two
agree field by field. Times are integer microseconds; ``end`` is always derived.

Every number is bounded by the Arrow type it lands in, so that a value the row schema cannot
hold is a validation error naming the field, never an overflow later: int32 fields (sizes,
sample rates, token counts, pages) up to 2^31-1, times up to 2^63-1 microseconds (and a start
plus its duration too, since the end is derived), float64 fields finite wherever a number must
be (``fps``, document layout boxes). Object box coordinates may be NaN or infinite: that is a
box error (``OBJ_BBOX`` in ``object_boxes``), not a schema error.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

RECORD_FORMAT_VERSION = "v1"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MIN_FPS, MAX_FPS = 0.01, 10_000.0  # one frame per 100 s .. high-speed cameras

Micros = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Count32 = Annotated[StrictInt, Field(gt=0, le=INT32_MAX)]
# Box coordinates are float64 (an integer converts; one beyond float64's range is an error).
# An object box's NaN or infinity is a box error (OBJ_BBOX), not a schema error.
Number = float
FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MediaRef(_Strict):
    modality: Literal["image", "audio", "video"]
    uri: StrictStr = Field(min_length=1)
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    width: Count32 | None = None
    height: Count32 | None = None
    orientation: Literal["canonical", "mirrored"] | None = None
    sample_rate: Count32 | None = None
    # a frame rate a video can have: 5e-324 passed ``gt=0`` and overflowed the segment features
    fps: Annotated[float, Field(ge=MIN_FPS, le=MAX_FPS, allow_inf_nan=False)] | None = None
    duration_us: Micros | None = None
    num_tokens: Count32 | None = None
    features_path: StrictStr | None = None


class Box(_Strict):
    label: StrictStr = Field(min_length=1)
    bbox: Annotated[list[Number], Field(min_length=4, max_length=4)]
    format: Literal["pascal_voc", "coco", "yolo", "albumentations"]


def _check_end(start_us: int | None, duration_us: int | None) -> None:
    if start_us is not None and duration_us is not None and start_us + duration_us > INT64_MAX:
        raise ValueError(f"start_us + duration_us is over {INT64_MAX} (the end must fit int64)")


class TimedText(_Strict):
    start_us: Micros
    duration_us: Micros
    text: StrictStr

    @model_validator(mode="after")
    def _end_fits(self) -> TimedText:
        _check_end(self.start_us, self.duration_us)
        return self


class DocItem(_Strict):
    type: Literal["text", "image", "audio"]
    text: StrictStr | None = None
    media_index: Annotated[StrictInt, Field(ge=0, le=INT32_MAX)] | None = None
    page: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]
    bbox: Annotated[list[FiniteNumber], Field(min_length=4, max_length=4)] | None = None


class Record(_Strict):
    """One input sample. Kind-specific fields are optional here and checked by ``kind``."""

    id: Annotated[StrictStr, Field(pattern=ID_PATTERN)]
    kind: Literal["object", "segment", "document", "text"]
    content: StrictStr
    media: list[MediaRef] = Field(default_factory=list)
    source: StrictStr = Field(min_length=1)
    license: StrictStr = Field(min_length=1)
    placeholder_version: Literal["v1"] = "v1"
    review_status: Literal["unreviewed", "sampled", "approved", "rejected"] = "unreviewed"
    # object
    boxes: list[Box] | None = None
    captions: list[StrictStr] | None = None
    laterality: StrictBool | None = None
    # segment
    start_us: Micros | None = None
    duration_us: Micros | None = None
    subtitles: list[TimedText] | None = None
    words: list[TimedText] | None = None
    # document
    items: list[DocItem] | None = None

    @model_validator(mode="after")
    def _end_fits(self) -> Record:
        _check_end(self.start_us, self.duration_us)
        return self


MEDIA_TYPE = pa.struct(
    [
        ("modality", pa.string()),
        ("uri", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("orientation", pa.string()),
        ("sample_rate", pa.int32()),
        ("fps", pa.float64()),
        ("duration_us", pa.int64()),
        ("num_tokens", pa.int32()),
        ("features_path", pa.string()),
    ]
)
BOX_TYPE = pa.struct([("label", pa.string()), ("bbox", pa.list_(pa.float64())), ("format", pa.string())])
TIMED_TEXT_TYPE = pa.struct([("start_us", pa.int64()), ("duration_us", pa.int64()), ("text", pa.string())])
DOC_ITEM_TYPE = pa.struct(
    [
        ("type", pa.string()),
        ("text", pa.string()),
        ("media_index", pa.int32()),
        ("page", pa.int32()),
        ("bbox", pa.list_(pa.float64())),
    ]
)

RECORD_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("kind", pa.string()),
    pa.field("content", pa.string()),
    pa.field("media", pa.list_(MEDIA_TYPE)),
    pa.field("source", pa.string()),
    pa.field("license", pa.string()),
    pa.field("placeholder_version", pa.string()),
    pa.field("review_status", pa.string()),
    pa.field("boxes", pa.list_(BOX_TYPE)),
    pa.field("captions", pa.list_(pa.string())),
    pa.field("laterality", pa.bool_()),
    pa.field("start_us", pa.int64()),
    pa.field("duration_us", pa.int64()),
    pa.field("subtitles", pa.list_(TIMED_TEXT_TYPE)),
    pa.field("words", pa.list_(TIMED_TEXT_TYPE)),
    pa.field("items", pa.list_(DOC_ITEM_TYPE)),
]

# Columns the pipeline adds to every row. ``manifest_root`` is the directory (path or s3:// URI)
# that relative media URIs resolve against; ``source_ref`` is "<manifest>:<line>".
PIPELINE_FIELDS: list[pa.Field] = [
    pa.field("status", pa.string(), nullable=False),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_code", pa.string()),
    pa.field("reject_detail", pa.string()),
    pa.field("parent_id", pa.string()),
    pa.field("manifest_root", pa.string()),
    pa.field("source_ref", pa.string()),
]

ROW_SCHEMA = pa.schema(RECORD_FIELDS + PIPELINE_FIELDS)
STATUS_OK = "ok"
STATUS_REJECTED = "rejected"


def record_json_schema() -> dict[str, object]:
    """JSON Schema (draft 2020-12) of one input record, exported for users' own validators."""
    schema = Record.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://xmodal.dev/schemas/record-v1.json"
    return schema
