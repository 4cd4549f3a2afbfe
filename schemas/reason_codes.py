"""Reason codes: the only values a rejected row's ``reject_code`` may take (DESIGN.md)."""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    SCHEMA = "ERR_CROSS_MDL_SCHEMA"
    MEDIA = "ERR_CROSS_MDL_MEDIA"
    TOKEN_FMT = "ERR_CROSS_MDL_TOKEN_FMT"
    OBJ_BBOX = "ERR_CROSS_MDL_OBJ_BBOX"
    OBJ_ANCHOR = "ERR_CROSS_MDL_OBJ_ANCHOR"
    OBJ_FLIP = "ERR_CROSS_MDL_OBJ_FLIP"
    MIRROR = "ERR_CROSS_MDL_MIRROR"
    TEMPORAL = "ERR_CROSS_MDL_TEMPORAL"
    DTW_OOM = "ERR_CROSS_MDL_DTW_OOM"
    FUSION = "ERR_CROSS_MDL_FUSION"
    LOW_SCORE = "ERR_CROSS_MDL_LOW_SCORE"
    HALLUCINATION = "ERR_CROSS_MDL_HALLUCINATION"
    HARD_NEG = "ERR_CROSS_MDL_HARD_NEG"
    TEMPLATE = "ERR_CROSS_MDL_TEMPLATE"
    DUPLICATE = "ERR_CROSS_MDL_DUPLICATE"


MEANINGS: dict[ReasonCode, str] = {
    ReasonCode.SCHEMA: "record does not parse or violates the schema",
    ReasonCode.MEDIA: "media missing, undecodable, checksum mismatch, path escapes the root",
    ReasonCode.TOKEN_FMT: "placeholder grammar violated",
    ReasonCode.OBJ_BBOX: "box invalid: outside the image, degenerate, inverted, NaN",
    ReasonCode.OBJ_ANCHOR: "<box> tag and boxes disagree",
    ReasonCode.OBJ_FLIP: "spatial words contradict box geometry",
    ReasonCode.MIRROR: "orientation metadata missing or contradicting",
    ReasonCode.TEMPORAL: "subtitle/audio/video order reversed or offset beyond tolerance",
    ReasonCode.DTW_OOM: "segment cannot be aligned inside the length cap and memory quota",
    ReasonCode.FUSION: "non-finite or exploding features, black frames, silent or noise-only audio",
    ReasonCode.LOW_SCORE: "CLIP/CLAP similarity below the configured threshold",
    ReasonCode.HALLUCINATION: "caption names objects that the annotations do not contain",
    ReasonCode.HARD_NEG: "candidate negative dropped as a likely false negative",
    ReasonCode.TEMPLATE: "caption reused across many visually distinct samples (dataset-level)",
    ReasonCode.DUPLICATE: "near-duplicate of a kept row, or of a row of an evaluation set (dataset-level)",
}
