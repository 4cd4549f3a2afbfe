"""object_augment: boxes move with pixels, mirrored captions are rewritten, rows reproduce."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA
from stages.object_augment import ObjectAugment, TransformSpec, build_compose, mirror_words
from stages.object_boxes import ObjectBoxes
from tests.stages.object_rows import object_record, object_table, run_checks, verdicts

FLIP_ONLY = [{"name": "HorizontalFlip", "params": {"p": 1.0}}]
SCENE = [("red circle", [20, 40, 90, 110], "pascal_voc"),
         ("blue square", [160, 50, 230, 120], "pascal_voc")]


def source_rows(root: Path) -> list[dict]:
    return [
        object_record(root, "two", SCENE, "A <box>red circle</box> on the left of a "
                      "<box>blue square</box>.", ["The square is right of the circle.",
                                                  "Left: a circle. RIGHT: a square."]),
        object_record(root, "one", [("green square", [40, 60, 100, 150], "pascal_voc")],
                      "A bright <box>green square</box> on the left."),
        object_record(root, "film", SCENE, "A <box>red circle</box> left of a <box>blue "
                      "square</box>.", laterality=True),
        {"id": "t", "kind": "text", "content": "left", "source": "s", "license": "l"},
    ]


def augment(root: Path, out: Path, **params: object) -> tuple[dict, dict]:
    recs = source_rows(root)
    recs[2]["media"][0]["orientation"] = "canonical"
    table = ObjectBoxes()(object_table(recs, root))
    result = ObjectAugment({"media_out": str(out), **params})(table)
    rows = {r["id"]: r for r in result.to_pylist()}
    return rows, {r["id"]: r for r in result.to_pylist() if r["parent_id"]}


def test_flip_with_rewrite_stays_valid_and_without_is_caught(tmp_path: Path) -> None:
    rows, new = augment(tmp_path, tmp_path / "aug", transforms=FLIP_ONLY)
    assert set(new) == {"two-aug0", "one-aug0", "film-aug0"}
    assert new["two-aug0"]["content"].endswith(
        "A <box>red circle</box> on the right of a <box>blue square</box>.")
    assert new["two-aug0"]["captions"] == ["The square is left of the circle.",
                                           "Right: a circle. LEFT: a square."]
    assert new["one-aug0"]["content"].endswith("A bright <box>green square</box> on the right.")
    assert new["two-aug0"]["boxes"][0]["bbox"] == [166.0, 40.0, 236.0, 110.0]
    assert all(code is None for code in verdicts(run_checks(_table(new))).values())

    _, unrewritten = augment(tmp_path, tmp_path / "aug2", transforms=FLIP_ONLY,
                             rewrite_captions=False)
    got = verdicts(run_checks(_table(unrewritten)))
    flip = str(ReasonCode.OBJ_FLIP)
    assert got == {"two-aug0": flip, "one-aug0": flip, "film-aug0": None}


def _table(rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows.values()), schema=ROW_SCHEMA)


def test_orientation_sensitive_rows_are_never_mirrored(tmp_path: Path) -> None:
    rows, new = augment(tmp_path, tmp_path / "aug", transforms=FLIP_ONLY)
    film = new["film-aug0"]
    assert json.loads(film["augment_transforms"]) == []
    assert film["content"] == rows["film"]["content"]
    assert film["boxes"] == rows["film"]["boxes"]


def test_rows_are_conserved_and_media_written(tmp_path: Path) -> None:
    rows, new = augment(tmp_path, tmp_path / "aug", copies=2)
    assert len(rows) == 4 + 6
    assert all(rows[i]["parent_id"] is None and rows[i]["status"] == "ok"
               for i in ("two", "one", "film", "t"))
    for row in new.values():
        ref = row["media"][0]
        assert ref["uri"].startswith(str(tmp_path / "aug"))
        data = Path(ref["uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref["sha256"]
        h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert (w, h) == (ref["width"], ref["height"])
        assert row["parent_id"] in ("two", "one", "film") and row["augment_seed"] is not None


def test_same_seed_reproduces_pixels_boxes_and_record(tmp_path: Path) -> None:
    _, first = augment(tmp_path, tmp_path / "a", copies=3, seed=7)
    _, second = augment(tmp_path, tmp_path / "b", copies=3, seed=7)
    _, other = augment(tmp_path, tmp_path / "c", copies=3, seed=8)
    keys = ("boxes", "content", "captions", "augment_seed", "augment_transforms")
    for rid, row in first.items():
        assert row["media"][0]["sha256"] == second[rid]["media"][0]["sha256"]
        assert all(row[k] == second[rid][k] for k in keys)
    seeds = [r["augment_seed"] for r in first.values()]
    assert seeds != [r["augment_seed"] for r in other.values()]


def _filled_extent(image: np.ndarray, colour: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(np.abs(image.astype(int) - colour).sum(axis=2) < 60)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_geometric_transforms_move_boxes_with_pixels(tmp_path: Path) -> None:
    affine = [{"name": "Affine", "params": {"scale": [0.8, 1.2], "translate_percent": [-0.1, 0.1],
                                            "p": 1.0}},
              {"name": "HorizontalFlip", "params": {"p": 0.5}}]
    src_rows, new = augment(tmp_path, tmp_path / "aug", transforms=affine, copies=4)
    source = cv2.imread(str(tmp_path / "media" / "two.png"))
    colours = [source[int((b[1] + b[3]) / 2), int((b[0] + b[2]) / 2)] for _, b, _ in SCENE]
    checked = 0
    for row in new.values():
        if row["parent_id"] != "two":
            continue
        image = cv2.imread(row["media"][0]["uri"])
        for box, colour in zip(row["boxes_xyxy"], colours, strict=True):
            assert np.allclose(_filled_extent(image, colour), box, atol=2.5)
            checked += 1
    assert checked == 8


def test_box_that_leaves_the_image_drops_the_copy(tmp_path: Path) -> None:
    away = [{"name": "Affine", "params": {"translate_percent": [0.9, 0.95], "p": 1.0}}]
    _, new = augment(tmp_path, tmp_path / "aug", transforms=away, max_attempts=2)
    assert new == {}


def test_needs_media_out() -> None:
    with pytest.raises(ValueError, match="media_out"):
        ObjectAugment().setup()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 40), st.integers(2, 20),
                       st.integers(2, 20)), min_size=1, max_size=4),
    st.lists(st.sampled_from(["left", "Right", "ABOVE", "below", "in front of", "the", "circle",
                              "bright", "top"]), max_size=12),
    st.sampled_from(["HorizontalFlip", "VerticalFlip"]),
)
def test_any_flip_twice_is_identity_on_boxes_and_captions(
        boxes: list[tuple[int, int, int, int]], words: list[str], flip: str) -> None:
    width, height = 80, 60
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float64)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    compose = build_compose([TransformSpec(name=flip, params={"p": 1.0})], True, 0.0, 0.0, True)
    horizontal, vertical = flip == "HorizontalFlip", flip == "VerticalFlip"
    caption = " ".join(words)
    once = compose(image=image, bboxes=xyxy, box_index=np.arange(len(xyxy)))
    twice = compose(image=once["image"], bboxes=once["bboxes"], box_index=once["box_index"])
    assert np.array_equal(twice["image"], image)
    assert np.allclose(twice["bboxes"], xyxy, atol=1e-3)
    flipped = mirror_words(caption, horizontal, vertical)
    assert mirror_words(flipped, horizontal, vertical) == caption
