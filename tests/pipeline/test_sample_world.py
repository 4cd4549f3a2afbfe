"""The sample world: records validate, media match their refs, clean records are truly clean,
every fault breaks its own rule, and the same seed gives the same bytes."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import soundfile

from pipeline.world import FAULT_KINDS, WorldSummary, generate_world
from pipeline.world.boxes import box_to_pixel_xyxy
from schemas.reason_codes import ReasonCode
from schemas.records import Record

RELATION_TOLERANCE_PX = 20
ID_PREFIX = re.compile(r'^\{"id": "([A-Za-z0-9_-]{1,128})", ')
RELATION_SENTENCE = re.compile(r"The (\w+ \w+) is (left of|right of|above|below) the (\w+ \w+)\.")
COLOUR_SHAPE = re.compile(
    r"\b(red|green|blue|yellow|orange|purple) (circle|square|triangle)\b")
SPAN = re.compile(r"<\|(image|audio|video)_start\|>(.*?)<\|\1_end\|>")
BODY_TOKEN = re.compile(r"<\|(image|audio|video)_pad\|>|<(IMG|AUD|VID)_TK_(\d+)>")
PREFIX = {"image": "IMG", "audio": "AUD", "video": "VID"}
FAULT_CODES = {
    ReasonCode.SCHEMA, ReasonCode.MEDIA, ReasonCode.TOKEN_FMT, ReasonCode.OBJ_BBOX,
    ReasonCode.OBJ_ANCHOR, ReasonCode.OBJ_FLIP, ReasonCode.MIRROR, ReasonCode.HALLUCINATION,
    ReasonCode.TEMPORAL, ReasonCode.FUSION, ReasonCode.LOW_SCORE,
}


class World:
    """A generated world read back: raw lines, parsed records and the fault table."""

    def __init__(self, summary: WorldSummary) -> None:
        self.summary = summary
        self.root = summary.out_dir
        self.lines = summary.manifest_path.read_text(encoding="utf-8").splitlines()
        rows = summary.faults_path.read_text(encoding="utf-8").splitlines()
        self.header = rows[0]
        self.faults: dict[str, tuple[str, str]] = {}
        for row in rows[1:]:
            record_id, fault, code = row.split("\t")
            self.faults[record_id] = (fault, code)
        self.records: dict[str, dict[str, Any]] = {}
        for line in self.lines:
            match = ID_PREFIX.match(line)
            if match is None:
                raise ValueError(f"line without a salvageable id: {line[:80]}")
            try:
                self.records[match.group(1)] = json.loads(line)
            except json.JSONDecodeError:
                self.records[match.group(1)] = {}

    def clean(self, kind: str) -> list[dict[str, Any]]:
        return [r for i, r in self.records.items() if i not in self.faults and r["kind"] == kind]

    def faulty(self, fault: str) -> list[dict[str, Any]]:
        return [self.records[i] for i, (name, _) in self.faults.items() if name == fault]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(generate_world(tmp_path_factory.mktemp("world"), n=200, fault_rate=0.3, seed=0))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pixel_boxes(record: dict[str, Any]) -> dict[str, tuple[float, float, float, float]]:
    width, height = record["media"][0]["width"], record["media"][0]["height"]
    return {box["label"]: box_to_pixel_xyxy(box["bbox"], box["format"], width, height)
            for box in record["boxes"]}


def _relation_holds(relation: str, subject: tuple[float, ...], reference: tuple[float, ...]
                    ) -> bool:
    dx = (subject[0] + subject[2]) / 2 - (reference[0] + reference[2]) / 2
    dy = (subject[1] + subject[3]) / 2 - (reference[1] + reference[3]) / 2
    return {"left of": dx < -RELATION_TOLERANCE_PX, "right of": dx > RELATION_TOLERANCE_PX,
            "above": dy < -RELATION_TOLERANCE_PX, "below": dy > RELATION_TOLERANCE_PX}[relation]


def _read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _first_tone_us(path: Path) -> int:
    samples, rate = soundfile.read(path)
    window = rate // 100
    rms = np.sqrt(np.mean(samples[: len(samples) // window * window].reshape(-1, window) ** 2,
                          axis=1))
    return int(np.argmax(rms > 0.1)) * 10_000


def _tone_starts_us(path: Path) -> list[int]:
    """Where each tone burst starts (10 ms resolution)."""
    samples, rate = soundfile.read(path)
    window = rate // 100
    rms = np.sqrt(np.mean(samples[: len(samples) // window * window].reshape(-1, window) ** 2,
                          axis=1))
    loud = np.concatenate([[False], rms > 0.1])
    return [int(k) * 10_000 for k in np.flatnonzero(loud[1:] & ~loud[:-1])]


def test_every_line_but_schema_faults_validates(world: World) -> None:
    assert len(world.lines) == 200
    for line in world.lines:
        record_id = ID_PREFIX.match(line).group(1)  # type: ignore[union-attr]
        if world.faults.get(record_id, ("", ""))[1] == ReasonCode.SCHEMA:
            with pytest.raises(ValueError):  # JSONDecodeError and ValidationError both are
                Record.model_validate(json.loads(line))
            continue
        record = Record.model_validate(json.loads(line))
        assert (record.source, record.license, record.placeholder_version) == (
            "xmodal-sample-world", "CC0-1.0", "v1")


def test_faults_table_covers_every_code_and_fault(world: World) -> None:
    assert world.header == "id\tfault\texpected_code"
    assert set(world.faults) <= set(world.records)
    assert {code for _, code in world.faults.values()} == {code.value for code in FAULT_CODES}
    assert {name for name, _ in world.faults.values()} == {fault.name for fault in FAULT_KINDS}
    assert world.summary.fault_count == len(world.faults) == 60
    written = json.loads((world.root / "world.json").read_text(encoding="utf-8"))
    assert written["faults_by_code"] == world.summary.faults_by_code
    assert sum(written["counts_by_kind"].values()) == 200


def test_clean_media_match_their_refs(world: World) -> None:
    for record_id, record in world.records.items():
        if record_id in world.faults:
            continue
        for ref in record["media"]:
            assert _sha256(world.root / ref["uri"]) == ref["sha256"], record_id
            if "features_path" in ref:
                features = np.load(world.root / ref["features_path"])
                assert features.shape == (80, 16) and np.isfinite(features).all()


def test_clean_objects_are_coherent(world: World) -> None:
    laterality_seen = False
    for record in world.clean("object"):
        ref = record["media"][0]
        image = cv2.imread(str(world.root / ref["uri"]))
        assert image.shape == (ref["height"], ref["width"], 3)
        boxes = _pixel_boxes(record)
        assert len(boxes) == len(record["boxes"]) >= 1
        for x1, y1, x2, y2 in boxes.values():
            assert all(math.isfinite(v) for v in (x1, y1, x2, y2))
            assert 0 <= x1 < x2 <= ref["width"] + 1e-3 and 0 <= y1 < y2 <= ref["height"] + 1e-3
        text = " ".join([record["content"], *record["captions"]])
        assert set(re.findall(r"<box>(.*?)</box>", text)) == set(boxes)
        assert {" ".join(m) for m in COLOUR_SHAPE.findall(text)} <= set(boxes)
        for subject, relation, reference in RELATION_SENTENCE.findall(text):
            assert _relation_holds(relation, boxes[subject], boxes[reference]), record["id"]
        assert 2 <= len(record["captions"]) <= 4
        if record.get("laterality"):
            laterality_seen = True
            assert ref["orientation"] == "canonical"
            assert any("left side" in caption for caption in record["captions"])
    assert laterality_seen
    assert {box["format"] for r in world.clean("object") for box in r["boxes"]} == {
        "pascal_voc", "coco", "yolo", "albumentations"}


def test_clean_placeholders_follow_grammar_v1(world: World) -> None:
    for kind in ("object", "segment"):
        for record in world.clean(kind):
            content = record["content"]
            assert not re.search(r"&lt;|&gt;|\\u003c|\uff1c|\uff1e", content)
            spans = SPAN.findall(content)
            assert [m for m, _ in spans] == [ref["modality"] for ref in record["media"]]
            assert SPAN.sub("", content).count("<|") == 0  # no stray or nested sentinel
            for (modality, body), ref in zip(spans, record["media"], strict=True):
                tokens = BODY_TOKEN.findall(body)
                assert "".join(BODY_TOKEN.sub("", body)) == "" and tokens
                pads = [t for t in tokens if t[0]]
                assert len(pads) in (0, len(tokens))
                assert all(t[0] == modality or t[1] == PREFIX[modality] for t in tokens)
                assert all(int(t[2]) < 8192 for t in tokens if t[2])
                assert ref.get("num_tokens", len(tokens)) == len(tokens)


def test_clean_segments_are_aligned(world: World) -> None:
    segments = world.clean("segment")
    for record in segments:
        duration = record["duration_us"]
        starts = [s["start_us"] for s in record["subtitles"]]
        assert starts == sorted(starts) and len(starts) >= 2
        assert all(s["start_us"] + s["duration_us"] <= duration for s in record["subtitles"])
    for record in segments[:3]:
        video, audio = record["media"]
        frames = _read_frames(world.root / video["uri"])
        assert abs(len(frames) - video["fps"] * video["duration_us"] / 1e6) <= 1
        assert frames[0].shape == (video["height"], video["width"], 3)
        info = soundfile.info(str(world.root / audio["uri"]))
        assert info.samplerate == audio["sample_rate"] and info.channels == 1
        assert info.frames == audio["sample_rate"] * audio["duration_us"] // 1_000_000
        first = record["subtitles"][0]["start_us"]
        assert abs(_first_tone_us(world.root / audio["uri"]) - first) <= 20_000
        still = frames[first // 100_000 - 1].astype(int)
        moved = frames[(first + record["subtitles"][0]["duration_us"]) // 100_000].astype(int)
        assert np.abs(frames[0].astype(int) - still).max() < 40  # no motion before the event
        assert np.abs(moved - still).max() > 100  # the ball moved during it


def test_clean_documents_reference_their_figures(world: World) -> None:
    for record in world.clean("document"):
        assert record["content"] == "" and {i["page"] for i in record["items"]} >= {1, 2}
        images = [item for item in record["items"] if item["type"] == "image"]
        assert sorted(item["media_index"] for item in images) == list(range(len(record["media"])))
        for index, item in enumerate(record["items"]):
            if item["type"] != "image":
                continue
            caption = record["items"][index + 1]["text"]
            uri = record["media"][item["media_index"]]["uri"]
            figure = cv2.imread(str(world.root / uri))
            colour = COLOUR_SHAPE.search(caption)
            assert figure is not None and colour is not None
            assert f"Figure {item['media_index'] + 1} shows" in caption


def test_each_fault_breaks_its_rule(world: World) -> None:
    for record_id, (fault, _) in world.faults.items():
        if fault == "truncated_json_line":
            line = next(x for x in world.lines if x.startswith(f'{{"id": "{record_id}", '))
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
    for record in world.faulty("mirrored_image_and_boxes"):
        boxes = _pixel_boxes(record)
        claims = RELATION_SENTENCE.findall(record["content"])
        assert claims and not all(_relation_holds(r, boxes[s], boxes[o]) for s, r, o in claims)
    for record in world.faulty("undecodable_image"):
        ref = next(ref for ref in record["media"] if ref["modality"] == "image"
                   and cv2.imread(str(world.root / ref["uri"])) is None)
        assert _sha256(world.root / ref["uri"]) == ref["sha256"]
    for record in world.faulty("missing_media_file"):
        assert any(not (world.root / ref["uri"]).exists() for ref in record["media"])
    for record in world.faulty("sha256_mismatch"):
        assert any(_sha256(world.root / r["uri"]) != r["sha256"] for r in record["media"])
    for record in world.faulty("audio_offset"):
        onset = _first_tone_us(world.root / record["media"][1]["uri"])
        assert abs(onset - record["subtitles"][0]["start_us"] - 1_500_000) <= 20_000
    for record in world.faulty("silent_audio"):
        assert not soundfile.read(world.root / record["media"][1]["uri"])[0].any()
    for record in world.faulty("black_video"):
        assert all(not f.any() for f in _read_frames(world.root / record["media"][0]["uri"]))
    for record in world.faulty("nan_features"):
        assert np.isnan(np.load(world.root / record["media"][0]["features_path"])).any()
    for record in world.faulty("box_nan_coordinate"):
        assert any(math.isnan(v) for box in record["boxes"] for v in box["bbox"])
    for record in world.faulty("laterality_orientation_missing"):
        assert record["laterality"] is True and "orientation" not in record["media"][0]
    for record in world.faulty("subtitles_reversed"):
        starts = [s["start_us"] for s in record["subtitles"]]
        assert starts == sorted(starts, reverse=True)
    for record in world.faulty("audio_from_other_clip"):
        # another clip's tones: they no longer start with the clip's own events
        audio = world.root / record["media"][1]["uri"]
        assert _sha256(audio) == record["media"][1]["sha256"]
        assert _tone_starts_us(audio) != [s["start_us"] for s in record["subtitles"]]
    for record in world.faulty("subtitle_from_other_clip"):
        # the tones still follow the video; the subtitles mark another clip's events
        audio = world.root / record["media"][1]["uri"]
        assert _tone_starts_us(audio) != [s["start_us"] for s in record["subtitles"]]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    def fingerprint(root: Path) -> tuple[bytes, bytes, dict[str, str]]:
        media = {p.name: _sha256(p) for p in sorted((root / "media").iterdir())}
        return ((root / "manifest.jsonl").read_bytes(), (root / "faults.tsv").read_bytes(), media)

    first = generate_world(tmp_path / "a", n=30, fault_rate=0.3, seed=7).out_dir
    again = generate_world(tmp_path / "b", n=30, fault_rate=0.3, seed=7).out_dir
    other = generate_world(tmp_path / "c", n=30, fault_rate=0.3, seed=8).out_dir
    assert fingerprint(first) == fingerprint(again)
    assert fingerprint(first)[0] != fingerprint(other)[0]
    rerun = generate_world(tmp_path / "a", n=30, fault_rate=0.3, seed=7).out_dir
    assert fingerprint(rerun) == fingerprint(again)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_world(tmp_path / "w", n=0)
    with pytest.raises(ValueError):
        generate_world(tmp_path / "w", n=5, fault_rate=1.5)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError):
        generate_world(tmp_path / "foreign", n=5)
    assert (tmp_path / "foreign" / "notes.txt").exists()
