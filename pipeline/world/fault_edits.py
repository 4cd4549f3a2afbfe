"""Record-level fault edits: each function changes one field of a rendered record (or one media
file) so that the record has exactly one reason to be rejected.

Records are plain JSON-ready dicts here because several faults (content that is not a string,
a missing ``kind``) cannot be represented by the typed :class:`schemas.records.Record`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.world import boxes, render
from pipeline.world.objects import article
from pipeline.world.segments import SAMPLE_RATE, SegmentScene, plan_segment_scene, render_audio

JsonRecord = dict[str, Any]
TOKEN_PREFIX = {"image": "IMG", "audio": "AUD", "video": "VID"}
OUT_OF_VOCAB_TOKEN_ID = 152104  # far beyond the default vocabulary of 8192
# A donor clip differs from the record by at least this in some event's start or end (relative
# to the first start): twice the 100 ms frame grid, so that no single lag lines the two up.
DONOR_MIN_TIMING_US = 200_000
IN_VOCAB_TOKEN_ID = 451
UNDECODABLE_PREFIX = b"not an image\n"  # no image format starts like this


def _first_modality(record: JsonRecord) -> str:
    return str(record["media"][0]["modality"])


def _span_pattern(modality: str) -> re.Pattern[str]:
    return re.compile(rf"<\|{modality}_start\|>(.*?)<\|{modality}_end\|>")


def _span_body_tokens(content: str, modality: str) -> list[str]:
    match = _span_pattern(modality).search(content)
    if match is None:
        raise ValueError(f"content has no {modality} span")
    return re.findall(r"<\|[a-z]+_pad\|>|<[A-Z]+_TK_\d+>", match.group(1))


def _with_span_body(content: str, modality: str, body: str) -> str:
    start, end = f"<|{modality}_start|>", f"<|{modality}_end|>"
    return _span_pattern(modality).sub(lambda _: f"{start}{body}{end}", content, count=1)


def _replace_start_sentinel(record: JsonRecord, replacement: str) -> None:
    sentinel = f"<|{_first_modality(record)}_start|>"
    record["content"] = str(record["content"]).replace(sentinel, replacement, 1)


def _absent_label(record: JsonRecord, rng: np.random.Generator) -> str:
    present = {box["label"] for box in record["boxes"]}
    absent = [f"{colour} {shape}" for colour in render.COLOURS_BGR for shape in render.SHAPES
              if f"{colour} {shape}" not in present]
    return absent[int(rng.integers(len(absent)))]


def _pick_media_ref(record: JsonRecord, rng: np.random.Generator, modality: str | None = None
                    ) -> dict[str, Any]:
    refs = [ref for ref in record["media"] if modality is None or ref["modality"] == modality]
    return refs[int(rng.integers(len(refs)))]


# SCHEMA ------------------------------------------------------------------------------------
def content_not_string(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    record["content"] = 42


def missing_kind(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    del record["kind"]


# MEDIA -------------------------------------------------------------------------------------
def path_traversal_uri(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    ref = _pick_media_ref(record, rng)
    (out_dir / ref["uri"]).unlink()  # the real file would only be an orphan
    ref["uri"], ref["sha256"] = "../../etc/passwd", None


def sha256_mismatch(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    ref = _pick_media_ref(record, rng)
    ref["sha256"] = render.sha256_hex((out_dir / ref["uri"]).read_bytes() + b"\n")


def missing_media_file(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    (out_dir / _pick_media_ref(record, rng)["uri"]).unlink()


def undecodable_image(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    ref = _pick_media_ref(record, rng, "image")
    garbage = UNDECODABLE_PREFIX + rng.bytes(int(rng.integers(512, 2048)))
    ref["sha256"] = render.write_media(out_dir / ref["uri"], garbage)


# TOKEN_FMT ---------------------------------------------------------------------------------
def html_escaped_sentinel(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    _replace_start_sentinel(record, f"&lt;|{_first_modality(record)}_start|&gt;")


def unicode_escaped_sentinel(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    # A literal backslash, "u003c": the text a double-encoding JSON writer leaves behind.
    _replace_start_sentinel(record, f"\\u003c|{_first_modality(record)}_start|>")


def fullwidth_sentinel(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    _replace_start_sentinel(record, f"\uff1c|{_first_modality(record)}_start|\uff1e")


def missing_start_sentinel(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    _replace_start_sentinel(record, "")


def out_of_vocab_token(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    modality = _first_modality(record)
    prefix = TOKEN_PREFIX[modality]
    body = f"<{prefix}_TK_{IN_VOCAB_TOKEN_ID}><{prefix}_TK_{OUT_OF_VOCAB_TOKEN_ID}>"
    record["content"] = _with_span_body(record["content"], modality, body)
    record["media"][0]["num_tokens"] = 2  # the count agrees: only the id is wrong


def num_tokens_mismatch(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    modality = _first_modality(record)
    record["media"][0]["num_tokens"] = len(_span_body_tokens(record["content"], modality)) + 1


def mixed_pad_and_token_body(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    modality = _first_modality(record)
    tokens = _span_body_tokens(record["content"], modality)
    pad, token = f"<|{modality}_pad|>", f"<{TOKEN_PREFIX[modality]}_TK_{IN_VOCAB_TOKEN_ID}>"
    if len(tokens) == 1:
        # Only when num_tokens is absent (pad bodies never carry it): the count stays unchecked.
        tokens = [pad, token]
    else:
        tokens[0] = token if tokens[0] == pad else pad  # same length as num_tokens
    record["content"] = _with_span_body(record["content"], modality, "".join(tokens))


def nested_spans(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    # The audio span moves inside the video span: both still pair up and count one each.
    audio_span = "<|audio_start|><|audio_pad|><|audio_end|>"
    content = str(record["content"]).replace(audio_span, "", 1)
    record["content"] = content.replace("<|video_end|>", audio_span + "<|video_end|>", 1)


def box_tag_in_span(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    tokens = _span_body_tokens(record["content"], "image")
    tag = f"<box>{record['boxes'][0]['label']}</box>"
    body = tokens[0] + tag + "".join(tokens[1:])
    record["content"] = _with_span_body(record["content"], "image", body)


# OBJ_BBOX ----------------------------------------------------------------------------------
def _box_geometry(record: JsonRecord) -> tuple[int, int]:
    return int(record["media"][0]["width"]), int(record["media"][0]["height"])


def box_outside_image(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    width, height = _box_geometry(record)

    def centre_x(box: dict[str, Any]) -> float:
        x1, _, x2, _ = boxes.box_to_pixel_xyxy(box["bbox"], box["format"], width, height)
        return (x1 + x2) / 2

    rightmost = max(record["boxes"], key=centre_x)
    rightmost["bbox"] = boxes.box_outside_image(rightmost["bbox"], rightmost["format"], width,
                                                height)


def _random_box(record: JsonRecord, rng: np.random.Generator) -> dict[str, Any]:
    return record["boxes"][int(rng.integers(len(record["boxes"])))]


def box_inverted(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    box = _random_box(record, rng)
    box["bbox"] = boxes.box_inverted(box["bbox"], box["format"])


def box_nan_coordinate(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    box = _random_box(record, rng)
    box["bbox"] = boxes.box_with_nan(box["bbox"])


def box_zero_area(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    box = _random_box(record, rng)
    box["bbox"] = boxes.box_zero_area(box["bbox"], box["format"])


# OBJ_ANCHOR, MIRROR, HALLUCINATION ---------------------------------------------------------
def box_tag_unknown_label(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    # Only the tag changes; the untagged relation sentence still names real boxes.
    label = record["boxes"][-1]["label"]
    record["content"] = str(record["content"]).replace(
        f"<box>{label}</box>", f"<box>{_absent_label(record, rng)}</box>", 1)


def laterality_orientation_missing(record: JsonRecord, rng: np.random.Generator, out_dir: Path
                                   ) -> None:
    del record["media"][0]["orientation"]


def laterality_orientation_mirrored(record: JsonRecord, rng: np.random.Generator, out_dir: Path
                                    ) -> None:
    record["media"][0]["orientation"] = "mirrored"


def caption_names_absent_object(record: JsonRecord, rng: np.random.Generator, out_dir: Path
                                ) -> None:
    label = _absent_label(record, rng)
    record["captions"][-1] = f"{article(label).capitalize()} {label} is also visible."


# LOW_SCORE (media or subtitles of another clip) --------------------------------------------
def _timeline(spans: list[tuple[int, int]]) -> list[int]:
    """Every start and end relative to the first start."""
    first = spans[0][0]
    return [t - first for span in spans for t in span]


def _donor_scene(record: JsonRecord, rng: np.random.Generator) -> SegmentScene:
    """Another clip of the world's kind whose events differ from the record's in number or in
    timing (by ``DONOR_MIN_TIMING_US``) and whose pitches differ: its audio or subtitles cannot
    be the record's own, shifted. (Audio swapped between arbitrary clips is measured by the
    tests; this is the fault the world promises to be detectable.)"""
    own = [(s["start_us"], s["start_us"] + s["duration_us"]) for s in record["subtitles"]]
    own_pitches = [int(re.findall(r"(\d+) Hz", s["text"])[0]) for s in record["subtitles"]]
    for attempt in range(1000):
        donor = plan_segment_scene(f"{record['id']}-donor-{attempt}", rng)
        spans = [(e.start_us, e.end_us) for e in donor.events]
        if [e.pitch_hz for e in donor.events] == own_pitches:
            continue
        if len(spans) != len(own) or max(
                abs(a - b) for a, b in zip(_timeline(spans), _timeline(own), strict=True)
        ) >= DONOR_MIN_TIMING_US:
            return donor
    raise RuntimeError(f"no donor clip found for {record['id']}")


def audio_from_other_clip(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    ref = _pick_media_ref(record, rng, "audio")
    samples = render_audio(_donor_scene(record, rng), 0, silent=False)
    ref["sha256"] = render.write_media(out_dir / ref["uri"], render.encode_wav(samples, SAMPLE_RATE))


def subtitle_from_other_clip(record: JsonRecord, rng: np.random.Generator, out_dir: Path) -> None:
    record["subtitles"] = [{"start_us": e.start_us, "duration_us": e.duration_us,
                            "text": e.subtitle_text()} for e in _donor_scene(record, rng).events]


RECORD_EDITS: dict[str, Callable[[JsonRecord, np.random.Generator, Path], None]] = {
    edit.__name__: edit
    for edit in (
        content_not_string, missing_kind, path_traversal_uri, sha256_mismatch,
        missing_media_file, undecodable_image, html_escaped_sentinel, unicode_escaped_sentinel,
        fullwidth_sentinel, missing_start_sentinel, out_of_vocab_token, num_tokens_mismatch,
        mixed_pad_and_token_body, nested_spans, box_tag_in_span, box_outside_image,
        box_inverted, box_nan_coordinate, box_zero_area, box_tag_unknown_label,
        laterality_orientation_missing, laterality_orientation_mirrored,
        caption_names_absent_object, audio_from_other_clip, subtitle_from_other_clip,
    )
}
