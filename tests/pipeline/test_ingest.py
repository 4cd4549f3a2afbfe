"""Bad input never crashes ingest: every line becomes one row, bad ones rejected with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.run.ingest import fingerprint_input, read_manifest
from pipeline.run.local_runner import read_inputs

GOOD = {"id": "t-1", "kind": "text", "content": "hello", "source": "s", "license": "CC0-1.0"}


def write_lines(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_malformed_lines_become_rejected_rows(tmp_path: Path) -> None:
    big = json.dumps({**GOOD, "id": "t-big", "content": "x" * (10 * 1024 * 1024)}).encode()
    uri = write_lines(
        tmp_path / "m.jsonl",
        [
            json.dumps(GOOD).encode(),
            b'{"id": "t-trunc", "kind": "text", "content": "hel',
            b"",
            b"[1, 2, 3]",
            b'{"id": "t-utf", "content": "\xff\xfe"}',
            big,
            json.dumps({**GOOD, "id": "t-2", "content": 42}).encode(),
        ],
    )
    table = read_manifest(uri)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert table.num_rows == 6 == fingerprint_input(uri)[2]  # the blank line is not a record
    assert rows["t-1"]["status"] == "ok"
    for rid, needle in [
        ("t-trunc", "invalid JSON"),
        ("@line:4", "record is a JSON list"),
        ("t-utf", "not valid UTF-8"),
        ("t-big", "over the limit"),
        ("t-2", "content: Input should be a valid string"),
    ]:
        row = rows[rid]
        assert (row["status"], row["reject_code"], row["reject_stage"]) == (
            "rejected",
            "ERR_CROSS_MDL_SCHEMA",
            "ingest",
        )
        assert needle in row["reject_detail"]
        assert row["reject_detail"].startswith(f"{uri}:")  # names the line
    assert rows["t-trunc"]["kind"] == "text"  # salvaged for the report


def test_duplicate_ids_within_and_across_manifests(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD).encode(), json.dumps(GOOD).encode()])
    b = write_lines(tmp_path / "b.jsonl", [json.dumps(GOOD).encode()])
    table = read_inputs([a, b], 1 << 20)
    assert table["status"].to_pylist() == ["ok", "rejected", "rejected"]
    assert all("duplicate id 't-1'" in d for d in table["reject_detail"].to_pylist()[1:])


def test_parquet_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "id": "t-2", "kind": "nope"}]), path)
    table = read_manifest(str(path))
    assert table["status"].to_pylist() == ["ok", "rejected"]
    assert "kind" in table["reject_detail"][1].as_py()
    assert fingerprint_input(str(path))[2] == 2


def test_unreadable_parquet_is_one_rejected_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet")
    table = read_manifest(str(path))
    assert table.num_rows == 1 == fingerprint_input(str(path))[2]
    assert table["reject_code"][0].as_py() == "ERR_CROSS_MDL_SCHEMA"


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_manifest(str(tmp_path / "nope.jsonl"))


def test_manifest_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    import boto3

    boto3.client("s3").put_object(Bucket=s3_bucket, Key="in/m.jsonl", Body=json.dumps(GOOD).encode() + b"\n")
    table = read_manifest(f"s3://{s3_bucket}/in/m.jsonl")
    assert table["status"].to_pylist() == ["ok"]
    assert table["manifest_root"][0].as_py() == f"s3://{s3_bucket}/in"


def test_fingerprint_streams_and_counts_lines_across_chunk_boundaries(tmp_path: Path) -> None:
    import hashlib
    import random

    rng = random.Random(7)
    pieces = []
    for i in range(12000):  # ~3 MB: lines, blank lines and whitespace-only lines across 1 MiB reads
        line = b'{"id": "x%d", "pad": "%s"}' % (i, b"y" * rng.randrange(2000))
        pieces.append(rng.choice([b"", b"  \t", b"\r", line]))
    data = b"\n".join(pieces) + b"   "  # no final newline, a whitespace-only tail
    path = tmp_path / "m.jsonl"
    path.write_bytes(data)
    assert len(data) > 2 * 2**20
    expected = sum(1 for line in data.split(b"\n") if line.strip())
    assert fingerprint_input(str(path)) == (len(data), hashlib.sha256(data).hexdigest(), expected)
    path.write_bytes(data + b"\n{}")  # a last line without its newline still counts
    assert fingerprint_input(str(path))[2] == expected + 1
