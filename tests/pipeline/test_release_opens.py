"""A release opens in the tools data people use: its dataset card's configs in ``datasets``,
every shard with its ``release_part`` in DuckDB, and a kind's shards hold that kind's columns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.release.writer import InputFingerprint, write_release
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.placeholder_lint import PlaceholderLint

VOCAB = {"image": 8192, "audio": 8192, "video": 8192}


def build(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": f"t-{i:03d}", "kind": "text", "content": f"text {i}", "source": "s",
                         "license": "CC0-1.0"}) for i in range(12)]
    lines.append(json.dumps({"id": "t-bad", "kind": "text", "content": "<|image_start|> x", "source": "s",
                             "license": "CC0-1.0"}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    table = run_stages(read_inputs([str(manifest)], 1 << 20), [PlaceholderLint()]).table
    result = write_release(table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
                           inputs=[InputFingerprint(str(manifest), *fingerprint_input(str(manifest)))],
                           config_hash="c", code_version="t", vocab=VOCAB)
    return Path(result.uri)


def test_release_opens_in_datasets_and_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["card"]["path"] == "README.md" and (root / "README.md").is_file()
    data = pq.read_table(root / "data" / "text-00000.parquet")
    assert set(data["release_part"].to_pylist()) == {"data"}
    assert "boxes" not in data.schema.names and "status" not in data.schema.names  # the kind's own columns
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets = pytest.importorskip("datasets")
    text = datasets.load_dataset(str(root), "text", split="train")
    assert sorted(text["id"]) == [f"t-{i:03d}" for i in range(12)]
    rejects = datasets.load_dataset(str(root), "rejects", split="train")
    assert rejects["id"] == ["t-bad"]
    duckdb = pytest.importorskip("duckdb")
    parts = duckdb.sql(f"select release_part, count(*) from read_parquet('{root}/**/*.parquet', union_by_name=true) "
                       "group by 1 order by 1").fetchall()
    assert parts == [("data", 12), ("rejects", 1)]
