"""object_spatial: relations against box centres (FLIP) and laterality orientation (MIRROR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.run.ingest import read_manifest
from schemas.reason_codes import ReasonCode
from stages.object_boxes import ObjectBoxes
from stages.object_spatial import ObjectSpatial
from tests.stages.object_rows import details, object_record, object_table, verdicts

FLIP, MIRROR = str(ReasonCode.OBJ_FLIP), str(ReasonCode.MIRROR)
# red circle top-left and far back; blue square bottom-right and near
SCENE = [("red circle", [20, 20, 80, 80], "pascal_voc"),
         ("blue square", [160, 100, 230, 170], "pascal_voc")]


def check(tmp_path: Path, content: str, captions: list[str] | None = None,
          boxes: list | None = None, params: dict | None = None, **extra: Any
          ) -> tuple[str | None, str | None]:
    rec = object_record(tmp_path, "r", boxes or SCENE, content, captions, write_image=False,
                        **extra)
    out = ObjectSpatial(params)(ObjectBoxes()(object_table([rec], tmp_path)))
    return verdicts(out)["r"], details(out)["r"]


@pytest.mark.parametrize("text", [
    "The red circle is left of the blue square.",
    "A red circle to the left of a blue square.",
    "The blue square is on the right-hand side of the red circle.",
    "The circle is above the square; the square is below the circle.",
    "The red circle sits on top of the scene, the blue square is in front of the red circle.",
    "The circle is behind the square.",
    "Left of the blue square is a red circle.",
    "A red circle at the top left corner, a blue square on the right.",
    "A bright red circle and a square.",  # "bright" is not "right"
    "The circles are right of everything.",  # plural: not one box, not checked
])
def test_true_relations_pass(tmp_path: Path, text: str) -> None:
    assert check(tmp_path, text) == (None, None)


@pytest.mark.parametrize(("text", "axis"), [
    ("The red circle is right of the blue square.", "horizontal"),
    ("A red circle on the right.", "horizontal"),
    ("The blue square is to the left of the circle.", "horizontal"),
    ("The circle is below the blue square.", "vertical"),
    ("A blue square at the top.", "vertical"),
    ("The red circle is in front of the blue square.", "vertical"),
    ("The blue square is behind the red circle.", "vertical"),
])
def test_contradiction_is_a_flip(tmp_path: Path, text: str, axis: str) -> None:
    code, detail = check(tmp_path, text)
    assert code == FLIP
    assert f"a {axis} mirror explains it" in detail


def test_extra_captions_are_checked(tmp_path: Path) -> None:
    code, detail = check(tmp_path, "A <box>red circle</box>.",
                         ["Two shapes.", "The square is left of the circle."])
    assert code == FLIP and "'blue square' is left of 'red circle'" in detail


def test_mixed_axis_contradiction_is_not_a_plain_mirror(tmp_path: Path) -> None:
    boxes = SCENE + [("green triangle", [100, 20, 130, 60], "pascal_voc")]
    code, detail = check(tmp_path, "The circle is left of the square. The triangle is right of "
                         "the square.", boxes=boxes)
    assert code == FLIP and "not a plain mirror" in detail


def test_ambiguous_and_frame_relations_are_skipped(tmp_path: Path) -> None:
    boxes = SCENE + [("green circle", [200, 10, 240, 50], "pascal_voc")]
    assert check(tmp_path, "The circle is right of the square.", boxes=boxes)[0] is None
    assert check(tmp_path, "The L marker is on the left side of the film.")[0] is None
    assert check(tmp_path, "The red circle is on the right side of the picture.")[0] == FLIP


def test_coordinated_relations_keep_their_subject(tmp_path: Path) -> None:
    boxes = SCENE + [("green triangle", [20, 120, 60, 160], "pascal_voc")]
    ok = "The blue square is below the red circle and right of the green triangle."
    assert check(tmp_path, ok, boxes=boxes)[0] is None
    bad = "The blue square is below the red circle and left of the green triangle."
    code, detail = check(tmp_path, bad, boxes=boxes)
    assert code == FLIP and "'blue square' is left of 'green triangle'" in detail


def test_unresolved_subject_is_not_replaced_by_a_later_mention(tmp_path: Path) -> None:
    boxes = SCENE + [("green circle", [200, 10, 240, 50], "pascal_voc")]
    text = "The circle is right of the blue square and the red circle."
    assert check(tmp_path, text, boxes=boxes)[0] is None
    assert check(tmp_path, "The circle is on the left; a red circle.", boxes=boxes)[0] is None


def test_margins_are_configurable(tmp_path: Path) -> None:
    boxes = [("red circle", [100, 20, 140, 60], "pascal_voc"),
             ("blue square", [96, 100, 136, 140], "pascal_voc")]
    text = "The red circle is left of the blue square."
    assert check(tmp_path, text, boxes=boxes)[0] == FLIP
    assert check(tmp_path, text, boxes=boxes, params={"relation_margin_px": 5})[0] is None
    assert check(tmp_path, "A red circle on the left.", boxes=boxes)[0] is None  # centre band
    assert check(tmp_path, "The square is in front of the circle.", boxes=boxes[::-1],
                 params={"check_depth": False})[0] is None


@pytest.mark.parametrize(("orientation", "code", "needle"), [
    (None, MIRROR, "image ref 0 has no orientation"),
    ("mirrored", MIRROR, "image ref 0 is 'mirrored'"),
    ("canonical", None, None),
])
def test_laterality_needs_canonical_orientation(tmp_path: Path, orientation: str | None,
                                                code: str | None, needle: str | None) -> None:
    rec = object_record(tmp_path, "r", SCENE, "A <box>red circle</box>.",
                        ["The L marker is on the left side of the film."], write_image=False,
                        laterality=True)
    if orientation:
        rec["media"][0]["orientation"] = orientation
    out = ObjectSpatial()(object_table([rec], tmp_path))
    assert verdicts(out)["r"] == code
    if needle:
        assert needle in details(out)["r"]


def test_laterality_caption_left_right_still_checked(tmp_path: Path) -> None:
    rec = object_record(tmp_path, "r", SCENE, "The red circle is right of the blue square.",
                        write_image=False, laterality=True)
    rec["media"][0]["orientation"] = "canonical"
    out = ObjectSpatial()(object_table([rec], tmp_path))
    assert verdicts(out)["r"] == FLIP


def test_odd_rows_never_raise(tmp_path: Path) -> None:
    rec = object_record(tmp_path, "r", SCENE, "The red circle is right of the square.",
                        write_image=False)
    del rec["media"][0]["width"]  # no size and no file: nothing checkable
    text = {"id": "t", "kind": "text", "content": "left of", "source": "s", "license": "l"}
    out = ObjectSpatial()(object_table([rec, text], tmp_path))
    assert verdicts(out) == {"r": None, "t": None}


def test_examples_flip_case(examples_dir: Path) -> None:
    out = ObjectSpatial()(ObjectBoxes()(read_manifest(str(examples_dir / "objects.jsonl"))))
    got = verdicts(out)
    assert got["obj-flip"] == FLIP
    assert "'red circle' is left of 'blue square'" in details(out)["obj-flip"]
    for clean in ("obj-clean-1", "obj-clean-coco", "obj-clean-yolo", "obj-anchor"):
        assert got[clean] is None
