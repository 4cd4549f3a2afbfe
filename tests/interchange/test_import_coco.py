"""COCO, ODVG and RefCOCO imports: real-format files (read back by pycocotools), the records
field by field, the reject lines for bad input, and `xmodal check` over the manifest."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from pipeline.errors import UserError
from pipeline.interchange.commands import run_import
from pipeline.interchange.manifest import record_id
from tests.interchange.helpers import check, manifest_lines, write_image

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 18, "name": "dog", "supercategory": "animal"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]


def coco_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    images_dir = tmp_path / "val2017"
    for name in ("000001.jpg", "000002.png", "000004.jpg", "000005.jpg"):
        write_image(images_dir / name)  # 000003.jpg is missing on purpose
    images = [{"id": i, "file_name": f, "width": 160, "height": 120, "license": 1,
               "coco_url": f"http://images.cocodataset.org/val2017/{f}"}
              for i, f in ((1, "000001.jpg"), (2, "000002.png"), (3, "000003.jpg"), (4, "000004.jpg"),
                           (5, "000005.jpg"))]
    images[1]["license"] = 2
    anns = [
        {"id": 10, "image_id": 1, "category_id": 18, "bbox": [10, 20, 50, 40], "area": 2000.0, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [80, 10, 40, 90], "area": 3600.0, "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [5, 5, 100, 60], "area": 6000.0, "iscrowd": 0},
        {"id": 13, "image_id": 3, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 14, "image_id": 4, "category_id": 3, "bbox": [5, 5, 10], "area": 100.0, "iscrowd": 0},
        {"id": 15, "image_id": 5, "category_id": 99, "bbox": [5, 5, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 16, "image_id": 77, "category_id": 3, "bbox": [5, 5, 10, 10], "area": 100.0, "iscrowd": 0},
    ]
    licenses = [{"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"},
                {"id": 2, "name": "Attribution-NonCommercial License", "url": "http://creativecommons.org/licenses/by-nc/2.0/"}]
    inst = tmp_path / "instances_val2017.json"
    inst.write_text(json.dumps({"info": {"description": "test"}, "licenses": licenses, "images": images,
                                "annotations": anns, "categories": CATEGORIES}))
    caps = [{"id": 100, "image_id": 1, "caption": "A man walks his dog  in the park."},
            {"id": 101, "image_id": 1, "caption": "A dog and its owner outside."},
            {"id": 102, "image_id": 2, "caption": "A red car parked on a street."},
            {"id": 103, "image_id": 3, "caption": "A car."}, {"id": 104, "image_id": 4, "caption": "A car."},
            {"id": 105, "image_id": 5, "caption": "A car."}]
    captions = tmp_path / "captions_val2017.json"
    captions.write_text(json.dumps({"info": {}, "licenses": licenses, "images": images, "annotations": caps}))
    return inst, captions, images_dir


def test_coco_records_field_by_field_and_check(tmp_path: Path) -> None:
    inst, captions, images_dir = coco_files(tmp_path)
    out = tmp_path / "out" / "manifest.jsonl"
    summary = run_import("coco", [str(inst), str(captions)], str(out), images=str(images_dir), media="copy")
    assert "6 line(s), 2 record(s), 4 rejected" in summary
    lines = {line["id"]: line for line in manifest_lines(out)}
    coco = COCO(str(inst))  # the reference reader of the format sees the same boxes and names
    for rid, image_id in (("coco-1", 1), ("coco-2", 2)):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert [b["bbox"] for b in lines[rid]["boxes"]] == [a["bbox"] for a in anns]
        assert [b["label"] for b in lines[rid]["boxes"]] == [coco.loadCats(a["category_id"])[0]["name"] for a in anns]
    one = lines["coco-1"]
    uri = one["media"][0]["uri"]
    assert uri.startswith("media/coco/") and uri.endswith("-000001.jpg") and (out.parent / uri).is_file()
    assert one == {
        "id": "coco-1", "kind": "object",
        "content": "<|image_start|><|image_pad|><|image_end|> A man walks his <box>dog</box> in the park.",
        "media": [{"modality": "image", "uri": uri, "width": 160, "height": 120}],
        "source": "http://images.cocodataset.org/val2017/000001.jpg", "license": "Attribution License",
        "boxes": [{"label": "dog", "bbox": [10.0, 20.0, 50.0, 40.0], "format": "coco"},
                  {"label": "person", "bbox": [80.0, 10.0, 40.0, 90.0], "format": "coco"}],
        "captions": ["A dog and its owner outside."],
    }
    assert lines["coco-2"]["license"] == "Attribution-NonCommercial License"
    assert lines["coco-2"]["content"].endswith("A red <box>car</box> parked on a street.")
    rejects = {rid: line["import_reject"] for rid, line in lines.items() if "import_reject" in line}
    assert rejects["coco-3"]["code"] == "ERR_CROSS_MDL_MEDIA"
    assert "'000003.jpg' not found" in rejects["coco-3"]["detail"]
    assert rejects["coco-4"]["code"] == "ERR_CROSS_MDL_SCHEMA"
    assert "(id 14): bbox has 3 numbers, not 4" in rejects["coco-4"]["detail"]
    assert "category_id 99 is not in 'categories'" in rejects["coco-5"]["detail"]
    assert "image_id 77 is not in 'images'" in rejects["coco-ann-16"]["detail"]

    results = check(out, tmp_path / "check")
    assert {rid for rid, r in results.items() if r["status"] == "ok"} == {"coco-1", "coco-2"}
    assert results["coco-3"]["reject_stage"] == "import" and results["coco-3"]["reject_code"] == "ERR_CROSS_MDL_MEDIA"
    assert results["coco-4"]["reject_detail"].endswith("annotations[4] (id 14): bbox has 3 numbers, not 4")
    assert len(results) == 6  # every input sample is one row: kept or rejected with a reason


def test_coco_needs_a_licence_from_somewhere(tmp_path: Path) -> None:
    inst, captions, images_dir = coco_files(tmp_path)
    for path in (inst, captions):
        doc = json.loads(path.read_text())
        doc["licenses"] = []
        path.write_text(json.dumps(doc))
    out = tmp_path / "m.jsonl"
    run_import("coco", [str(inst), str(captions)], str(out), images=str(images_dir))
    line = {x["id"]: x for x in manifest_lines(out)}["coco-1"]
    assert "license: none in the input and no --license given" in line["import_reject"]["detail"]
    run_import("coco", [str(inst), str(captions)], str(out), images=str(images_dir), license="CC-BY-4.0",
               source="my-coco")
    line = {x["id"]: x for x in manifest_lines(out)}["coco-1"]
    assert line["license"] == "CC-BY-4.0"
    assert line["source"] == "http://images.cocodataset.org/val2017/000001.jpg"  # the input's own wins
    assert line["media"][0]["uri"] == "val2017/000001.jpg"  # refer: inside the manifest's folder, relative


def test_a_file_that_is_not_coco_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a COCO file"):
        run_import("coco", [str(bad)], str(tmp_path / "m.jsonl"))


def test_odvg_grounding_and_detection_lines(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "images" / name)
    caption = "a brown dog chases a frisbee"
    lines = [
        {"filename": "a.jpg", "height": 120, "width": 160, "grounding": {"caption": caption, "regions": [
            {"bbox": [10, 20, 60, 80], "phrase": "a brown dog", "tokens_positive": [[0, 11]]},
            {"bbox": [90, 10, 120, 40], "phrase": "frisbee", "tokens_positive": [[21, 28]]}]}},
        {"filename": "b.jpg", "height": 120, "width": 160, "detection": {"instances": [
            {"bbox": [1, 2, 30, 40], "label": 0, "category": "cat"}, {"bbox": [50, 2, 90, 40], "label": 0,
                                                                     "category": "cat"}]}},
        {"filename": "a.jpg", "grounding": {"caption": caption, "regions": [
            {"bbox": [10, 20, 60], "phrase": "dog", "tokens_positive": [[8, 11]]}]}},
        {"filename": "a.jpg", "grounding": {"caption": caption, "regions": [
            {"bbox": [10, 20, 60, 70], "phrase": "dog", "tokens_positive": [[8, 99]]}]}},
        {"filename": "missing.jpg", "detection": {"instances": [{"bbox": [1, 2, 3, 4], "category": "cat"}]}},
    ]
    src = tmp_path / "train.odvg.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    out = tmp_path / "manifest.jsonl"
    run_import("odvg", [str(src)], str(out), images=str(tmp_path / "images"), license="CC-BY-4.0")
    got = {x["id"]: x for x in manifest_lines(out)}
    first = got[record_id("odvg", "train.odvg-1")]
    assert first["content"] == ("<|image_start|><|image_pad|><|image_end|> <box>a brown dog</box> chases a "
                                "<box>frisbee</box>")
    assert first["boxes"] == [{"label": "a brown dog", "bbox": [10.0, 20.0, 60.0, 80.0], "format": "pascal_voc"},
                              {"label": "frisbee", "bbox": [90.0, 10.0, 120.0, 40.0], "format": "pascal_voc"}]
    assert first["source"] == "odvg:train.odvg.jsonl:1" and first["media"][0] == {
        "modality": "image", "uri": "images/a.jpg", "width": 160, "height": 120}
    details = [x["import_reject"]["detail"] for x in got.values() if "import_reject" in x]
    assert any("train.odvg.jsonl:3: grounding.regions[0]: bbox has 3 numbers, not 4" in d for d in details)
    assert any("train.odvg.jsonl:4: grounding.regions[0].tokens_positive: [8, 99]" in d for d in details)
    assert any("train.odvg.jsonl:5: filename: 'missing.jpg' not found" in d for d in details)
    assert any("train.odvg.jsonl:6: invalid JSON" in d for d in details)
    results = check(out, tmp_path / "check")
    assert sum(r["status"] == "ok" for r in results.values()) == 2 and len(results) == 6


def test_refcoco_refs_json_and_pickle(tmp_path: Path) -> None:
    inst, _, images_dir = coco_files(tmp_path)
    refs = [{"ref_id": 7, "ann_id": 10, "image_id": 1, "split": "val", "category_id": 18,
             "sentences": [{"sent": "the dog on the left", "raw": "The dog on the left."},
                           {"sent": "brown dog"}]},
            {"ref_id": 8, "ann_id": 999, "image_id": 1, "sentences": [{"sent": "nothing"}]}]
    as_json = tmp_path / "refs.json"
    as_json.write_text(json.dumps(refs))
    as_pickle = tmp_path / "refs(unc).p"
    as_pickle.write_bytes(pickle.dumps(refs))
    for refs_file in (as_json, as_pickle):
        out = tmp_path / f"{refs_file.suffix[1:]}.jsonl"
        run_import("refcoco", [str(refs_file), str(inst)], str(out), images=str(images_dir))
        got = {x["id"]: x for x in manifest_lines(out)}
        assert got["refcoco-7"]["content"] == "<|image_start|><|image_pad|><|image_end|> the <box>dog</box> on the left"
        assert got["refcoco-7"]["captions"] == ["brown dog"]
        assert [b["label"] for b in got["refcoco-7"]["boxes"]] == ["dog", "person"]  # referred box first
        assert "ann_id 999 is not in the instances" in got["refcoco-8"]["import_reject"]["detail"]
        results = check(out, tmp_path / f"check-{refs_file.suffix}", stages="placeholder_lint,media_check,object_boxes")
        assert results["refcoco-7"]["status"] == "ok" and results["refcoco-8"]["reject_stage"] == "import"


def test_a_pickle_that_builds_objects_is_refused(tmp_path: Path) -> None:
    inst, _, images_dir = coco_files(tmp_path)
    evil = tmp_path / "refs.p"
    evil.write_bytes(pickle.dumps([Path("x")]))  # refers to a class: never built
    with pytest.raises(UserError, match="only plain data is accepted"):
        run_import("refcoco", [str(evil), str(inst)], str(tmp_path / "m.jsonl"), images=str(images_dir))
