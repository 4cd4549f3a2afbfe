"""object_boxes: format conversion, every rejection rule, the examples, and round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.run.ingest import read_manifest
from schemas.reason_codes import ReasonCode
from stages.object_boxes import FORMATS, ObjectBoxes, from_xyxy, to_xyxy
from tests.stages.object_rows import details, object_record, object_table, verdicts

BBOX = str(ReasonCode.OBJ_BBOX)


def run(tmp_path: Path, boxes: list, params: dict | None = None
        ) -> tuple[str | None, str | None, list | None]:
    rec = object_record(tmp_path, "r", boxes, "A thing.", write_image=False)
    out = ObjectBoxes(params)(object_table([rec], tmp_path))
    row = out.to_pylist()[0]
    return row["reject_code"], row["reject_detail"], row["boxes_xyxy"]


@pytest.mark.parametrize(
    ("bbox", "fmt"),
    [([20, 40, 90, 110], "pascal_voc"), ([20, 40, 70, 70], "coco"),
     ([55 / 256, 75 / 192, 70 / 256, 70 / 192], "yolo"),
     ([20 / 256, 40 / 192, 90 / 256, 110 / 192], "albumentations")],
)
def test_every_format_normalises_to_pixel_xyxy(tmp_path: Path, bbox: list, fmt: str) -> None:
    code, _, xyxy = run(tmp_path, [("red circle", bbox, fmt)])
    assert code is None
    assert np.allclose(xyxy, [[20, 40, 90, 110]])


@pytest.mark.parametrize(
    ("bbox", "fmt", "needle"),
    [([200, 40, 300, 110], "pascal_voc", "x2=300 is beyond width 256"),
     ([-5, 40, 90, 110], "pascal_voc", "x1=-5 is left of 0"),
     ([20, -3, 90, 110], "pascal_voc", "y1=-3 is above 0"),
     ([20, 40, 90, 200], "pascal_voc", "y2=200 is beyond height 192"),
     ([120, 60, 60, 120], "pascal_voc", "x1 > x2"),
     ([20, 120, 90, 60], "pascal_voc", "y1 > y2"),
     ([0.5, 0.2, 0.3, 0.4], "albumentations", "x1 > x2"),
     ([50, 40, 50, 110], "pascal_voc", "zero width"),
     ([50, 40, 0, 70], "coco", "zero width"),
     ([50, 40, -10, 70], "coco", "negative width"),
     ([0.5, 0.5, -0.1, 0.2], "yolo", "negative width"),
     ([50, 40, 50.5, 110], "pascal_voc", "below the minimum side of 1 px"),
     ([20, float("nan"), 90, 110], "pascal_voc", "non-finite"),
     ([20, 40, float("inf"), 110], "pascal_voc", "non-finite"),
     ([20, 40, 90], "pascal_voc", "bbox has 3 values, not 4")],
)
def test_bad_box_is_rejected_with_index(tmp_path: Path, bbox: list, fmt: str, needle: str) -> None:
    good = ("blue square", [150, 50, 200, 100], "pascal_voc")
    rec = object_record(tmp_path, "r", [good, ("red circle", bbox, fmt)], "x", write_image=False)
    if len(bbox) != 4:  # the schema wants 4 numbers: build the row past ingest
        rec["boxes"][1]["bbox"] = [20.0, 40.0, 90.0, 110.0]
    table = object_table([rec], tmp_path)
    if len(bbox) != 4:
        rows = table.to_pylist()
        rows[0]["boxes"][1]["bbox"] = [float(v) for v in bbox]
        table = pa.Table.from_pylist(rows, schema=table.schema)
    out = ObjectBoxes()(table)
    assert verdicts(out)["r"] == BBOX
    detail = details(out)["r"]
    assert detail.startswith("box 1 ('red circle'): ")
    assert needle in detail
    assert out["boxes_xyxy"].to_pylist() == [None]


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    table = object_table([object_record(tmp_path, "r", [("a", [1, 2, 30, 40], "coco")], "x",
                                        write_image=False)], tmp_path)
    rows = table.to_pylist()
    rows[0]["boxes"][0]["format"] = "xywh_center"
    out = ObjectBoxes()(pa.Table.from_pylist(rows, schema=table.schema))
    assert verdicts(out)["r"] == BBOX
    assert "unknown box format 'xywh_center'" in details(out)["r"]


def test_outside_tolerance_is_configurable_and_clipped(tmp_path: Path) -> None:
    code, _, xyxy = run(tmp_path, [("a", [-0.5, 0, 256.8, 192], "pascal_voc")])
    assert code is None
    assert xyxy == [[0.0, 0.0, 256.0, 192.0]]  # clipped inside the default 1 px tolerance
    code, detail, _ = run(tmp_path, [("a", [0, 0, 259, 192], "pascal_voc")])
    assert code == BBOX and "tolerance 1 px" in detail
    code, _, xyxy = run(tmp_path, [("a", [0, 0, 259, 192], "pascal_voc")],
                        {"outside_tolerance_px": 4, "clip_to_image": False})
    assert code is None and xyxy == [[0.0, 0.0, 259.0, 192.0]]


def test_min_side_is_configurable(tmp_path: Path) -> None:
    box = [("a", [10, 10, 14, 40], "pascal_voc")]
    assert run(tmp_path, box)[0] is None
    code, detail, _ = run(tmp_path, box, {"min_side_px": 8})
    assert code == BBOX and "width 4 px is below the minimum side of 8 px" in detail


def test_counts_every_bad_box(tmp_path: Path) -> None:
    boxes = [("a", [0, 0, 10, 10], "pascal_voc"), ("b", [30, 0, 20, 10], "pascal_voc"),
             ("c", [0, 0, 300, 10], "pascal_voc")]
    code, detail, _ = run(tmp_path, boxes)
    assert code == BBOX and detail.startswith("box 1 ('b')") and "(2 of 3 boxes invalid)" in detail


def test_missing_size_is_read_from_the_image(tmp_path: Path) -> None:
    rec = object_record(tmp_path, "r", [("a", [0.5, 0.5, 0.25, 0.5], "yolo")], "x", width=200,
                        height=100)
    del rec["media"][0]["width"], rec["media"][0]["height"]
    out = ObjectBoxes()(object_table([rec], tmp_path))
    assert verdicts(out)["r"] is None
    assert np.allclose(out["boxes_xyxy"].to_pylist()[0], [[75, 25, 125, 75]])
    rec["media"][0]["uri"] = "media/missing.png"
    out = ObjectBoxes()(object_table([rec], tmp_path))
    assert verdicts(out)["r"] == BBOX and "image size unknown" in details(out)["r"]


def test_other_rows_pass_untouched(tmp_path: Path) -> None:
    text = {"id": "t", "kind": "text", "content": "left of nothing", "source": "s", "license": "l"}
    empty = object_record(tmp_path, "e", [], "x", write_image=False)
    table = object_table([text, empty], tmp_path)
    rejected = table.to_pylist()
    out = ObjectBoxes()(table)
    assert verdicts(out) == {"t": None, "e": None}
    assert out["boxes_xyxy"].to_pylist() == [None, []]
    assert out.drop_columns(["boxes_xyxy"]).to_pylist() == rejected


def test_multi_chunk_and_sliced_batches(tmp_path: Path) -> None:
    recs = [object_record(tmp_path, f"r{i}", [("a", [i, 0, i + 20, 20], "pascal_voc"),
                                               ("b", [0, 0, 300 if i % 3 == 0 else 30, 9],
                                                "pascal_voc")], "x", write_image=False)
            for i in range(9)]
    table = object_table(recs, tmp_path)
    chunked = pa.concat_tables([table.slice(0, 4), table.slice(4, 2), table.slice(6)])
    out = ObjectBoxes()(chunked)
    expected = {f"r{i}": BBOX if i % 3 == 0 else None for i in range(9)}
    assert verdicts(out) == expected
    assert all(d.startswith("box 1 ('b')") for d in details(out).values() if d)
    ok = {r["id"]: r["boxes_xyxy"] for r in out.to_pylist() if r["status"] == "ok"}
    assert ok["r4"] == [[4.0, 0.0, 24.0, 20.0], [0.0, 0.0, 30.0, 9.0]]


def test_examples_bbox_cases(examples_dir: Path) -> None:
    out = ObjectBoxes()(read_manifest(str(examples_dir / "objects.jsonl")))
    got = verdicts(out)
    assert got["obj-bbox-outside"] == BBOX and got["obj-bbox-inverted"] == BBOX
    assert "x2=300 is beyond width 256" in details(out)["obj-bbox-outside"]
    assert "x1 > x2" in details(out)["obj-bbox-inverted"]
    for clean in ("obj-clean-1", "obj-clean-coco", "obj-clean-yolo", "obj-flip", "obj-anchor"):
        assert got[clean] is None


pixel_boxes = st.tuples(
    st.integers(16, 1024), st.integers(16, 1024),
    st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
).map(lambda t: (t[0], t[1], sorted((t[2] * t[0], t[4] * t[0])),
                  sorted((t[3] * t[1], t[5] * t[1]))))


@settings(max_examples=200, deadline=None)
@given(pixel_boxes, st.sampled_from(range(4)), st.sampled_from(range(4)))
def test_conversion_round_trips_between_formats(box: tuple, a: int, b: int) -> None:
    width, height, (x1, x2), (y1, y2) = box
    xyxy = np.array([[x1, y1, x2, y2]])
    w, h = np.array([width]), np.array([height])
    in_a = from_xyxy(xyxy, np.array([a]), w, h)
    via_a = to_xyxy(in_a, np.array([a]), w, h)
    in_b = from_xyxy(via_a, np.array([b]), w, h)
    back = to_xyxy(in_b, np.array([b]), w, h)
    assert np.allclose(back, xyxy, atol=1e-6), (FORMATS[a], FORMATS[b])
    assert np.allclose(from_xyxy(back, np.array([a]), w, h), in_a, atol=1e-9)
