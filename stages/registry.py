"""Stage names -> classes. Imports are lazy so that ``xmodal --help`` stays fast and a stage's
heavy dependencies (torch, librosa) load only where that stage runs."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable

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
    "image_fingerprint": "stages.image_fingerprint:ImageFingerprint",
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


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to a misspelt ``word`` (difflib), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or ``""``."""
    match = closest(word, choices)
    return f" (did you mean {match!r}?)" if match else ""


def unknown_stage_message(name: str) -> str:
    return (f"unknown stage {name!r}{did_you_mean(name, STAGE_CLASSES)}; known stages: "
            f"{', '.join(sorted(STAGE_CLASSES))} (xmodal stages lists them)")


def get_stage_class(name: str) -> type[Stage]:
    try:
        target = STAGE_CLASSES[name]
    except KeyError:
        raise UnknownStageError(unknown_stage_message(name)) from None
    module_name, class_name = target.split(":")
    cls: type[Stage] = getattr(importlib.import_module(module_name), class_name)
    return cls
