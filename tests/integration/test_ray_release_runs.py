"""A Ray run's release is the in-process release, byte for byte: the release's per-block work
on the workers (sorted runs, partials) and the driver's merge of the runs give the shards, counts
and metrics that one sorted table gives, with duplicate ids, many ingest blocks, many runs and
more runs than the merge's fan-in."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.build import run_config
from pipeline.release import runs
from pipeline.run.config import RunConfig, parse_config

pytestmark = pytest.mark.ray


def manifest(tmp_path: Path, n: int = 150) -> str:
    lines = []
    for i in range(n):
        content = "bad <|image_start|> span" if i % 11 == 0 else f"text {i} " + "y" * (i % 23)
        lines.append(json.dumps({"id": f"r-{i:04d}", "kind": "text", "content": content, "source": "s",
                                 "license": "CC0-1.0"}))
    for i in (3, 40, 41):  # ids seen again later: the later lines lose
        lines.append(json.dumps({"id": f"r-{i:04d}", "kind": "text", "content": "again", "source": "s",
                                 "license": "CC0-1.0"}))
    lines.append('{"id": "broken", ')
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def config(tmp_path: Path, uri: str, version: str) -> RunConfig:
    return parse_config({
        "dataset": "rr", "version": version, "inputs": [uri], "stages": ["placeholder_lint"],
        "ray": {"lines_per_block": 13},
        "release": {"output": str(tmp_path / "rel"), "shard_target_bytes": 900},
    })


def shards(result: object) -> list[tuple[str, str]]:
    return [(s["path"], s["sha256"]) for s in result.manifest["shards"]]  # type: ignore[attr-defined]


def test_a_ray_release_is_the_in_process_release(ray_local: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = manifest(tmp_path)
    monkeypatch.setattr(runs, "MIN_RUN_ROWS", 10)  # 154 rows in runs of 19 (4 per CPU of 2): 9 runs
    monkeypatch.setattr(runs, "FAN_IN", 4)  # merged 4 at a time first
    on_ray = run_config(config(tmp_path, uri, "ray"))
    local = run_config(config(tmp_path, uri, "local"), local=True)
    assert shards(on_ray) == shards(local) and len(shards(local)) > 6
    assert on_ray.manifest["counts"] == local.manifest["counts"]
    untimed = [{k: v for k, v in r.manifest["metrics"].items() if k != "throughput"} for r in (on_ray, local)]
    assert untimed[0] == untimed[1] and untimed[0]
    counts = on_ray.manifest["counts"]
    assert counts["input_records"] == 154 == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_code"]["ERR_CROSS_MDL_SCHEMA"] == 4  # 3 duplicates + the broken line
    timing = next(t for t in on_ray.manifest["stage_timings"] if t["stage"] == "release_runs")
    assert timing["rows_in"] == 154 and timing["seconds"] > 0
    dup = pq.read_table(Path(on_ray.uri) / "rejects" / "ingest" / "ERR_CROSS_MDL_SCHEMA" / "part-00000.parquet")
    assert sorted(d for d in dup["reject_detail"].to_pylist() if "duplicate id" in d)[0].endswith("m.jsonl:4)")
    staged = [p.name for p in (tmp_path / "rel" / "rr").iterdir() if p.name.startswith(".")]
    assert staged == []  # runs, id runs and merged runs removed with the staging
