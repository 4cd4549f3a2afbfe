"""object_hallucination: CHAIR-i / CHAIR-s per sample and per batch, thresholds, synonyms."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.run.ingest import read_manifest
from schemas.reason_codes import ReasonCode
from stages.object_hallucination import ObjectHallucination, chair_totals, sample_chair
from tests.stages.object_rows import details, object_record, object_table, verdicts

HALL = str(ReasonCode.HALLUCINATION)
LABELS = ["red circle", "blue square", "person", "teddy bear"]


def test_sample_chair_counts_mentions_and_captions() -> None:
    counts = sample_chair(
        "<|image_start|><|image_pad|><|image_end|> A <box>red circle</box> by a man.",
        ["Two circles and a teddy bear.", "A dog next to a blue square.", "A green square."],
        LABELS)
    # caption 0: circle, man; 1: circles, teddy bear; 2: dog (bad), square; 3: green square (bad)
    assert (counts.mentions, counts.hallucinated_mentions) == (7, 2)
    assert (counts.captions, counts.hallucinated_captions) == (4, 2)
    assert counts.chair_i == pytest.approx(2 / 7) and counts.chair_s == pytest.approx(0.5)
    assert counts.first == "caption 2: 'dog'"
    assert counts.hallucinated_objects == {"dog": 1, "green square": 1}


def test_synonyms_plurals_and_negation_are_not_hallucinations() -> None:
    counts = sample_chair(None, ["People hug teddy bears near a red disc.",
                                 "There is no dog and not a cat.", "A woman, a child."], LABELS)
    assert counts.hallucinated_mentions == 0 and counts.mentions == 5


def test_colour_matching_is_configurable() -> None:
    assert sample_chair(None, ["A blue circle."], LABELS).hallucinated_mentions == 1
    assert sample_chair(None, ["A blue circle."], LABELS, match_colours=False
                        ).hallucinated_mentions == 0


def stage_rows(tmp_path: Path, params: dict | None = None) -> tuple[dict, dict, list]:
    boxes = [("red circle", [20, 40, 90, 110], "pascal_voc"),
             ("blue square", [160, 50, 230, 120], "pascal_voc")]
    recs = [
        object_record(tmp_path, "clean", boxes, "A <box>red circle</box>.", ["Two shapes."],
                      write_image=False),
        object_record(tmp_path, "bad", boxes, "A <box>red circle</box>.",
                      ["A blue square.", "A green triangle is also visible."], write_image=False),
        object_record(tmp_path, "unannotated", [], "A cat.", write_image=False),
    ]
    out = ObjectHallucination(params)(object_table(recs, tmp_path))
    chairs = {r["id"]: (r["chair_i"], r["chair_s"]) for r in out.to_pylist()}
    return verdicts(out), details(out), [chairs, out]


def test_stage_rejects_and_fills_columns(tmp_path: Path) -> None:
    got, detail, (chairs, _) = stage_rows(tmp_path)
    assert got == {"clean": None, "bad": HALL, "unannotated": None}
    assert detail["bad"].startswith("caption 2: 'green triangle' names an object no box has")
    assert chairs["clean"] == (0.0, 0.0)
    assert chairs["bad"] == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert chairs["unannotated"] == (None, None)


def test_thresholds_are_configurable(tmp_path: Path) -> None:
    assert stage_rows(tmp_path, {"max_chair_s": 0.5})[0]["bad"] is None
    assert stage_rows(tmp_path, {"max_chair_s": 1.0, "max_chair_i": 0.2})[0]["bad"] == HALL


def test_batch_metrics_are_ratios_of_totals(tmp_path: Path) -> None:
    _, _, (_, out) = stage_rows(tmp_path, {"max_chair_s": 1.0})
    m, _ = chair_totals(out)
    assert (m.mentions, m.hallucinated_mentions, m.captions, m.hallucinated_captions) == (
        4, 1, 5, 1)
    assert m.chair_i == pytest.approx(0.25) and m.chair_s == pytest.approx(0.2)
    rejected = ObjectHallucination()(out.slice(0, 2))
    kept, everything = chair_totals(rejected)
    assert kept.captions == 2  # the rejected row no longer counts
    assert everything.captions == 5


def test_examples_clean_rows_have_no_hallucination(examples_dir: Path) -> None:
    out = ObjectHallucination()(read_manifest(str(examples_dir / "objects.jsonl")))
    got = verdicts(out)
    for clean in ("obj-clean-1", "obj-clean-coco", "obj-clean-yolo", "obj-flip"):
        assert got[clean] is None
    assert got["obj-anchor"] == HALL  # its tag names an absent object; ANCHOR runs first
