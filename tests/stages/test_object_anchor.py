"""object_anchor: <box> tags name boxes; claimed labels are tagged; malformed tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.run.ingest import read_manifest
from schemas.reason_codes import ReasonCode
from stages.object_anchor import ObjectAnchor
from tests.stages.object_rows import details, object_record, object_table, verdicts

ANCHOR = str(ReasonCode.OBJ_ANCHOR)
BOXES = [("red circle", [20, 40, 90, 110], "pascal_voc"),
         ("blue square", [160, 50, 230, 120], "pascal_voc")]


def check(tmp_path: Path, content: str, params: dict | None = None
          ) -> tuple[str | None, str | None]:
    rec = object_record(tmp_path, "r", BOXES, content, write_image=False)
    out = ObjectAnchor(params)(object_table([rec], tmp_path))
    return verdicts(out)["r"], details(out)["r"]


@pytest.mark.parametrize("content", [
    "A <box>red circle</box> and a <box>blue square</box>.",
    "A <box>Red  Circle</box> and a <box>blue square</box>; the red circle is round.",
    "A red circle and a blue square.",  # no tags at all: nothing is claimed as anchored
    "Two shapes.",
])
def test_consistent_content_passes(tmp_path: Path, content: str) -> None:
    assert check(tmp_path, content) == (None, None)


@pytest.mark.parametrize(("content", "needle"), [
    ("A <box>green triangle</box>.", "tag <box>green triangle</box> names a label that no box has"),
    ("A <box>red circle</box> and a blue square.",
     "'blue square' is mentioned in the caption but never tagged"),
    ("A <box>red circle</box> and <box>blue square.", "unclosed <box> tag"),
    ("A <box>red circle</box></box>.", "stray </box> tag"),
    ("A <box><box>red circle</box></box>.", "nested <box> tag"),
    ("A <box> </box> red circle.", "empty <box></box> tag"),
])
def test_disagreement_is_rejected(tmp_path: Path, content: str, needle: str) -> None:
    code, detail = check(tmp_path, content)
    assert code == ANCHOR
    assert needle in detail


def test_untagged_mention_modes(tmp_path: Path) -> None:
    assert check(tmp_path, "A red circle.", {"untagged_mentions": "always"})[0] == ANCHOR
    assert check(tmp_path, "A <box>red circle</box>, a blue square.",
                 {"untagged_mentions": "ignore"})[0] is None
    assert check(tmp_path, "A <box>Red circle</box> and <box>blue square</box>.",
                 {"case_sensitive": True})[0] == ANCHOR


def test_other_kinds_pass(tmp_path: Path) -> None:
    text = {"id": "t", "kind": "text", "content": "<box>x</box>", "source": "s", "license": "l"}
    assert verdicts(ObjectAnchor()(object_table([text], tmp_path))) == {"t": None}


def test_examples_anchor_case(examples_dir: Path) -> None:
    out = ObjectAnchor()(read_manifest(str(examples_dir / "objects.jsonl")))
    got = verdicts(out)
    assert got["obj-anchor"] == ANCHOR
    assert "names a label that no box has" in details(out)["obj-anchor"]
    for clean in ("obj-clean-1", "obj-clean-coco", "obj-clean-yolo", "obj-flip"):
        assert got[clean] is None
