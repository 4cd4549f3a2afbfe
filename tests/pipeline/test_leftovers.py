"""What a killed run leaves beside its version (``.staging-*``, ``.<version>.tmp-*``) is removed
by the next run of the same dataset and version, and nothing else is touched."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.build import run_config
from pipeline.release.leftovers import remove_leftovers
from pipeline.run.config import parse_config

LEFT_BY_V1 = [".staging-v1-0123abcd", ".v1.tmp-89abcdef"]
NOT_OURS = [".staging-v1.1-0123abcd", ".v1.1.tmp-89abcdef", ".staging-v10-0123abcd", ".build-v1", "_failed",
            ".staging-v1-notahex0", "v1.tmp-89abcdef"]


def leave(dataset: Path, names: list[str]) -> None:
    for name in names:
        (dataset / name / "data").mkdir(parents=True)
        (dataset / name / "data" / "part-0.parquet").write_bytes(b"x" * 100)


def test_only_this_versions_leftovers_go(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    leave(dataset, LEFT_BY_V1 + NOT_OURS + [".v1.old-00ff00ff"])
    (dataset / "latest").write_text("v0\n")
    # No published v1: its .old folder may be the last published copy, so it stays.
    assert remove_leftovers(str(tmp_path), "ds", "v1") == LEFT_BY_V1
    assert sorted(p.name for p in dataset.iterdir()) == sorted(NOT_OURS + [".v1.old-00ff00ff", "latest"])
    (dataset / "v1").mkdir()
    (dataset / "v1" / "manifest.json").write_text("{}")
    assert remove_leftovers(str(tmp_path), "ds", "v1") == [".v1.old-00ff00ff"]
    assert remove_leftovers(str(tmp_path), "ds", "v1") == []
    assert remove_leftovers(str(tmp_path), "no-such-dataset", "v1") == []


def test_the_next_run_of_the_version_removes_a_killed_runs_leftovers(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"t-{i}", "kind": "text", "content": f"text {i}",
                                            "source": "s", "license": "CC0-1.0"}) + "\n" for i in range(3)))
    dataset = tmp_path / "rel" / "ds"
    leave(dataset, LEFT_BY_V1 + [".staging-v2-0123abcd"])
    cfg = parse_config({"dataset": "ds", "version": "v1", "inputs": [str(manifest)], "stages": ["placeholder_lint"],
                        "release": {"output": str(tmp_path / "rel")}})
    result = run_config(cfg, local=True)
    assert result.manifest["counts"]["kept"] == 3
    assert sorted(p.name for p in dataset.iterdir()) == [".staging-v2-0123abcd", "latest", "v1"]
