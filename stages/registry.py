"""Stage names -> classes. Imports are lazy so that ``xmodal --help`` stays fast and a stage's
heavy dependencies (torch, librosa) load only where that stage runs."""

from __future__ import annotations

import importlib

from stages.base import Stage

STAGE_CLASSES: dict[str, str] = {
    "media_check": "stages.media_check:MediaCheck",
    "placeholder_lint": "stages.placeholder_lint:PlaceholderLint",
    "object_boxes": "stages.object_boxes:ObjectBoxes",
    "object_anchor": "stages.object_anchor:ObjectAnchor",
    "object_spatial": "stages.object_spatial:ObjectSpatial",
    "object_hallucination": "stages.object_hallucination:ObjectHallucination",
    "object_augment": "stages.object_augment:ObjectAugment",
    "decode_media": "stages.decode_media:DecodeMedia",
    "clip_score": "stages.clip_score:ClipScore",
    "clap_score": "stages.clap_score:ClapScore",
    "segment_checks": "stages.segment_checks:SegmentChecks",
    "segment_align": "stages.segment_align:SegmentAlign",
    "negatives_text": "stages.negatives_text:NegativesText",
    "negatives_image": "stages.negatives_image:NegativesImage",
    "negatives_llm": "stages.negatives_llm:NegativesLlm",
    "negatives_filter": "stages.negatives_filter:NegativesFilter",
    "document_interleave": "stages.document_interleave:DocumentInterleave",
}

# The checks that need no model, in the order `xmodal check` runs them (cheap ones first).
MODEL_FREE_CHECKS: list[str] = [
    "placeholder_lint",
    "media_check",
    "object_boxes",
    "object_anchor",
    "object_spatial",
    "object_hallucination",
    "segment_checks",
]


class UnknownStageError(ValueError):
    pass


def get_stage_class(name: str) -> type[Stage]:
    try:
        target = STAGE_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(STAGE_CLASSES))
        raise UnknownStageError(f"unknown stage {name!r}; known stages: {known}") from None
    module_name, class_name = target.split(":")
    cls: type[Stage] = getattr(importlib.import_module(module_name), class_name)
    return cls
