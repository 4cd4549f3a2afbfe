"""`xmodal check` on a generated sample world: every injected fault gets its expected code and
no clean record is rejected (the ground truth is the world's faults.tsv)."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.world import generate_world


@pytest.mark.slow
def test_check_catches_every_injected_fault_and_keeps_clean_records(tmp_path: Path) -> None:
    world = generate_world(tmp_path / "world", n=132, fault_rate=0.25, seed=3)
    assert main(["check", str(world.manifest_path), "--out", str(tmp_path / "check")]) == 0
    results = {r["id"]: r for r in pq.read_table(tmp_path / "check" / "results.parquet").to_pylist()}
    with open(world.faults_path, newline="") as fh:
        faults = {r["id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert len(faults) == 33  # every fault kind once
    assert len(results) == 132
    wrong = {
        rid: (f["fault"], f["expected_code"], results[rid]["reject_code"], results[rid]["reject_detail"])
        for rid, f in faults.items()
        if results[rid]["reject_code"] != f["expected_code"]
    }
    assert not wrong
    clean_rejected = {
        rid: r["reject_detail"] for rid, r in results.items() if rid not in faults and r["status"] != "ok"
    }
    assert not clean_rejected
