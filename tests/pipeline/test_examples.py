"""`xmodal check` on tests/fixtures/examples gives every record the status and code of expected.tsv."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main


def expected_rows(examples_dir: Path) -> dict[str, tuple[str, str]]:
    with open(examples_dir / "expected.tsv", newline="") as fh:
        return {r["id"]: (r["status"], r["code"] or "") for r in csv.DictReader(fh, delimiter="\t")}


@pytest.mark.parametrize("manifest", ["objects.jsonl", "segments.jsonl", "documents.jsonl"])
def test_check_matches_expected(
    manifest: str, examples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(examples_dir / manifest), "--out", str(tmp_path)]) == 0
    results = pq.read_table(tmp_path / "results.parquet").to_pylist()
    expected = expected_rows(examples_dir)
    got = {r["id"]: (r["status"], r["reject_code"] or "") for r in results}
    want = {rid: expected[rid] for rid in got}
    assert got == want, {
        rid: (got[rid], want[rid], next(r["reject_detail"] for r in results if r["id"] == rid))
        for rid in got
        if got[rid] != want[rid]
    }
    out = capsys.readouterr().out
    kept = sum(r["status"] == "ok" for r in results)  # the summary counts every input record
    assert f"input records {len(results)} = kept {kept} + rejected {len(results) - kept}" in out
