"""The bulk world: N records over a K-record world's media, ids unique, faults copied with their
records and listed with their expected codes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc

from pipeline.world.bulk import generate_bulk_world


def test_bulk_world_reuses_the_pool_media_and_lists_every_copied_fault(tmp_path: Path) -> None:
    summary = generate_bulk_world(tmp_path / "w", n=130, media_pool=40, fault_rate=0.3, seed=3)
    lines = (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 130 == summary.n == sum(summary.counts_by_kind.values())
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass  # a truncated line is one of the injected faults
    ids = [r["id"] for r in parsed]
    assert len(ids) == len(set(ids))
    media = {m["uri"] for r in parsed for m in r.get("media") or []}
    files = {p.relative_to(tmp_path / "w").as_posix() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    assert media and media <= files  # every copy points at a file of the pool
    rows = (tmp_path / "w" / "faults.tsv").read_text().splitlines()[1:]
    assert len(rows) == sum(summary.faults_by_code.values()) > 0
    listed = {r.split("\t")[0] for r in rows}
    broken = len(lines) - len(parsed)
    assert len(listed & set(ids)) == len(listed) - broken  # every listed fault is a record of the world
    assert any(i.rsplit("_", 1)[-1].isdigit() for i in listed)  # faults of the copies are listed under the copies' ids


def test_bulk_world_copies_are_valid_records(tmp_path: Path) -> None:
    from pipeline.run.ingest import read_manifest

    summary = generate_bulk_world(tmp_path / "w", n=200, media_pool=30, fault_rate=0.2, seed=1)
    table = read_manifest(str(tmp_path / "w" / "manifest.jsonl"))
    schema_rejects = table.filter(pc.equal(table["reject_code"], "ERR_CROSS_MDL_SCHEMA")).num_rows
    assert table.num_rows == 200
    assert schema_rejects == summary.faults_by_code.get("ERR_CROSS_MDL_SCHEMA", 0)
