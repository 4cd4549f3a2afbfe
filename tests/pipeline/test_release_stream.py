"""The streamed release: the same inputs give the same shard bytes, counts, examples and metrics
whatever the block layout, and shards roll over at the size target and at each group change."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.release import runs
from pipeline.release.rows import row_nbytes
from pipeline.release.runs import RunCollector, RunMaker, RunsSource
from pipeline.release.source import RowSource, TableSource
from pipeline.release.stream import ShardStreamWriter, gather
from pipeline.release.writer import InputFingerprint, write_release_stream
from pipeline.run.config import MetricsConfig
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.placeholder_lint import PlaceholderLint

VOCAB = {"image": 8192, "audio": 8192, "video": 8192}


def manifest(tmp_path: Path, n: int = 120, duplicate: bool = True) -> str:
    lines = []
    for i in range(n):
        content = "bad <|image_start|> span" if i % 9 == 0 else f"text {i} " + "x" * (i % 37)
        lines.append(json.dumps({"id": f"t-{i:04d}", "kind": "text", "content": content, "source": "s",
                                 "license": "CC0-1.0"}))
    if duplicate:
        lines.append(json.dumps({"id": "t-0003", "kind": "text", "content": "a duplicate id", "source": "s",
                                 "license": "CC0-1.0"}))
    lines.append('{"id": "broken", ')
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def runs_source(tmp_path: Path, table: pa.Table, uri: str, run_rows: int) -> RunsSource:
    """What a Ray run leaves the release: the table's blocks through RunMaker, as the workers
    would call it, and their summaries through RunCollector."""
    staging = tmp_path / f"staging-{run_rows}"
    maker = RunMaker(str(staging), VOCAB, 2, MetricsConfig(), 0)
    collector = RunCollector(2)
    for start in range(0, table.num_rows, run_rows):
        collector(maker(table.slice(start, run_rows)))
    return collector.source(str(staging))


def release(tmp_path: Path, table: pa.Table, uri: str, name: str, block_rows: int,
            source: RowSource | None = None) -> dict:
    source = source or TableSource(table, block_rows=block_rows)
    gathered = gather(source, [uri], VOCAB, per_code=2, metrics_cfg=MetricsConfig())
    counts = gathered.partial.counts(fingerprint_input(uri)[2])
    assert gathered.partial.metrics is not None
    metrics = gathered.partial.metrics.finish(counts)
    examples = gathered.partial.examples
    result = write_release_stream(
        source, gathered, root=str(tmp_path / name), dataset="ds", version="v1",
        inputs=[InputFingerprint(uri, *fingerprint_input(uri))], config_hash="c", code_version="t", vocab=VOCAB,
        shard_target_bytes=700, metrics=metrics.to_json(),
        report_html=lambda shard_of: json.dumps(dict(sorted(shard_of.items()))),
        report_ids=examples["id"].to_pylist() if examples is not None else [])
    return {"manifest": result.manifest, "examples": examples.to_pylist() if examples is not None else [],
            "report": (Path(result.uri) / "report" / "index.html").read_text()}


def test_one_block_and_many_blocks_give_the_same_release(tmp_path: Path) -> None:
    uri = manifest(tmp_path)
    table = run_stages(read_inputs([uri], 1 << 20), [PlaceholderLint()]).table
    # shuffle the rows: the release order must not depend on the input order either
    table = table.take(pa.array(list(range(table.num_rows))[::-1]))
    one = release(tmp_path, table, uri, "one", block_rows=1 << 20)
    many = release(tmp_path, table, uri, "many", block_rows=7)
    m1, m2 = one["manifest"], many["manifest"]
    assert [(s["path"], s["sha256"]) for s in m1["shards"]] == [(s["path"], s["sha256"]) for s in m2["shards"]]
    assert m1["counts"] == m2["counts"] and m1["metrics"] == m2["metrics"]
    assert one["examples"] == many["examples"] and one["report"] == many["report"]
    counts = m1["counts"]
    assert counts["input_records"] == 122 == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_code"] == {"ERR_CROSS_MDL_SCHEMA": 2, "ERR_CROSS_MDL_TOKEN_FMT": 14}
    data = [s for s in m1["shards"] if s["path"].startswith("data/")]
    assert len(data) > 3  # the 700-byte target split the kind
    dup = pq.read_table(tmp_path / "one" / "ds" / "v1" / "rejects" / "ingest" / "ERR_CROSS_MDL_SCHEMA" /
                        "part-00000.parquet")
    details = dup["reject_detail"].to_pylist()
    # the first line of the id wins (line 4), whatever the order the rows came in
    assert any("duplicate id 't-0003' (first at" in d and d.endswith("m.jsonl:4)") for d in details)


@pytest.mark.parametrize("duplicates", [True, False])
def test_merged_runs_give_the_release_of_one_sorted_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          duplicates: bool) -> None:
    """A Ray run's release (sorted runs merged on the driver, more runs than the fan-in, and
    losers of duplicate ids taken out and merged back) is byte for byte the in-process one."""
    uri = manifest(tmp_path, duplicate=duplicates)
    table = run_stages(read_inputs([uri], 1 << 20), [PlaceholderLint()]).table
    table = table.take(pa.array(list(range(table.num_rows))[::-1]))
    monkeypatch.setattr(runs, "FAN_IN", 3)  # 18 runs of 7 rows: two levels of merging
    monkeypatch.setattr(runs, "RUN_ROW_GROUP", 4)  # a run is read 4 rows at a time
    whole = release(tmp_path, table, uri, "whole", block_rows=1 << 20)
    merged = release(tmp_path, table, uri, "merged", 0, source=runs_source(tmp_path, table, uri, 7))
    one = release(tmp_path, table, uri, "one", 0, source=runs_source(tmp_path, table, uri, 1 << 20))
    for other in (merged, one):
        assert [(s["path"], s["sha256"]) for s in other["manifest"]["shards"]] == \
            [(s["path"], s["sha256"]) for s in whole["manifest"]["shards"]]
        assert other["manifest"]["counts"] == whole["manifest"]["counts"]
        assert other["manifest"]["metrics"] == whole["manifest"]["metrics"]
        assert other["examples"] == whole["examples"] and other["report"] == whole["report"]
    rejected = whole["manifest"]["counts"]["rejected_by_code"]
    assert rejected.get("ERR_CROSS_MDL_SCHEMA") == (2 if duplicates else 1)


def test_shards_roll_over_at_the_target_and_at_each_group() -> None:
    written: list[tuple[str, int]] = []

    def put(rel: str, data: object) -> tuple[int, str]:
        blob = data if isinstance(data, bytes) else b"".join(data)  # type: ignore[arg-type]
        written.append((rel, pq.read_metadata(pa.BufferReader(blob)).num_rows if rel.endswith(".parquet") else 0))
        return len(blob), ""

    rows = pa.table({"_group": ["data/a"] * 5 + ["data/b"] * 2, "_bytes": [40, 40, 40, 40, 40, 10, 10],
                     "id": [str(i) for i in range(7)]})
    for layout in ([7], [1] * 7, [3, 4]):
        written.clear()
        writer = ShardStreamWriter(put, target_bytes=100, jsonl=False)
        start = 0
        for n in layout:
            writer.add(rows.slice(start, n))
            start += n
        writer.close()
        # a shard closes once its rows reach 100 bytes: 40+40+40 | 40+40 | b: 10+10
        assert written == [("data/a-00000.parquet", 3), ("data/a-00001.parquet", 2), ("data/b-00000.parquet", 2)]


def test_row_size_is_additive_over_any_split() -> None:
    table = pa.table({"s": ["a", None, "ccc"], "l": [[1.0, 2.0], [], None],
                      "st": [{"x": "yy", "v": [1]}, None, {"x": "", "v": []}]})
    whole = row_nbytes(table)
    parts = [row_nbytes(table.slice(i, 1))[0] for i in range(3)]
    assert whole.tolist() == parts and all(v > 0 for v in parts)
    assert whole[0] > whole[1]  # rows with more data weigh more
