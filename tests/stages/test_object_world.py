"""The sample world through the object checks: every injected object fault gets its code, no
clean object record is rejected, and mirror augmentation keeps (or, unrewritten, breaks) it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.run.ingest import read_manifest
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA
from stages.object_augment import ObjectAugment
from stages.object_lexicon import rewrite_left_right
from tests.stages.object_rows import run_checks, verdicts

OBJECT_CODES = {str(c) for c in (ReasonCode.OBJ_BBOX, ReasonCode.OBJ_ANCHOR, ReasonCode.OBJ_FLIP,
                                 ReasonCode.MIRROR, ReasonCode.HALLUCINATION)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict[str, str], Path]:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(out, n=120, fault_rate=0.5, seed=11)
    lines = summary.faults_path.read_text().splitlines()[1:]
    faults = {line.split("\t")[0]: line.split("\t")[2] for line in lines}
    return read_manifest(str(summary.manifest_path)), faults, out


def test_object_faults_caught_and_clean_records_kept(world: tuple) -> None:
    table, faults, _ = world
    got = verdicts(run_checks(table))
    objects = [rid for rid in got if rid.startswith("obj-")]
    injected = {rid: code for rid, code in faults.items() if code in OBJECT_CODES}
    assert set(injected.values()) == OBJECT_CODES  # the world holds every object fault code
    assert {rid: got[rid] for rid in injected} == injected
    clean = [rid for rid in objects if rid not in faults]
    assert len(clean) > 20
    assert {rid: got[rid] for rid in clean} == dict.fromkeys(clean)
    # faults that belong to other stages never get an object code from these checks
    assert not [rid for rid, code in faults.items()
                if code not in OBJECT_CODES and got.get(rid) in OBJECT_CODES]


def test_world_flip_with_rewrite_valid_without_caught(world: tuple) -> None:
    table, _, out = world
    checked = run_checks(table)
    ok = checked.filter(pc.and_(pc.equal(checked["status"], "ok"),
                                pc.equal(checked["kind"], "object")))
    flip = [{"name": "HorizontalFlip", "params": {"p": 1.0}}]
    results = {}
    for rewrite in (True, False):
        augmented = ObjectAugment({"media_out": str(out / f"aug-{rewrite}"), "transforms": flip,
                                   "rewrite_captions": rewrite})(ok)
        augmented = augmented.filter(pc.is_valid(augmented["parent_id"]))
        results[rewrite] = (augmented, verdicts(run_checks(augmented)))
    rows, with_rewrite = results[True]
    assert rows.num_rows > 20 and set(with_rewrite.values()) == {None}
    rows, without = results[False]
    mirrored_lr = {
        r["id"] for r in rows.to_pylist()
        if '"HorizontalFlip"' in r["augment_transforms"]
        and any(rewrite_left_right(t) != t for t in [r["content"], *(r["captions"] or [])])
    }
    assert len(mirrored_lr) > 5
    assert {rid: code for rid, code in without.items() if code} == dict.fromkeys(
        mirrored_lr, str(ReasonCode.OBJ_FLIP))


def test_odd_rows_never_raise_in_any_object_stage(tmp_path: Path) -> None:
    base = {"kind": "object", "status": "ok", "manifest_root": str(tmp_path)}
    image = {"modality": "image", "uri": "media/none.png", "width": 64, "height": 48}
    odd = [
        {"id": "a", "content": None, "boxes": None, "media": None},
        {"id": "b", "content": "A <box>x</box> left of", "boxes": [None], "media": [None]},
        {"id": "c", "content": "", "boxes": [{"label": None, "bbox": None, "format": None}],
         "media": [image]},
        {"id": "d", "content": "<box>", "captions": [None, "The circle is left of it."],
         "boxes": [{"label": "circle", "bbox": [1.0, 2.0, 30.0, 40.0], "format": "coco"}],
         "media": [image], "laterality": True},
        {"id": "e", "kind": None, "content": "left of a circle"},
    ]
    table = pa.Table.from_pylist([{**base, **row} for row in odd], schema=ROW_SCHEMA)
    out = run_checks(table)
    out = ObjectAugment({"media_out": str(tmp_path / "aug")})(out)
    assert out.num_rows == len(odd)
    assert not [d for d in out["reject_detail"].to_pylist() if d and "internal error" in d]
    assert verdicts(out)["d"] == str(ReasonCode.OBJ_ANCHOR)
