"""The CLI as a user meets it: help with examples, clean errors, stage chaining, lint exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import build_parser, main


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"sample", "check", "stage", "run", "lint"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert "example:" in text and f"xmodal {name}" in text, name


def test_stage_chaining_and_set(examples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(examples_dir / "objects.jsonl")
    assert (
        main(
            [
                "stage",
                "placeholder_lint",
                "--input",
                manifest,
                "--output",
                str(tmp_path / "a"),
                "--set",
                "image_vocab_size=200000",
            ]
        )
        == 0
    )
    rows = pq.read_table(tmp_path / "a" / "rows.parquet")
    assert rows.num_rows == 13
    assert "obj-vocab" not in [r["id"] for r in rows.to_pylist() if r["status"] != "ok"]  # vocab raised by --set
    assert (
        main(["stage", "media_check", "--input", str(tmp_path / "a" / "rows.parquet"), "--output", str(tmp_path / "b")])
        == 0
    )
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "b" / "rows.parquet").to_pylist()}
    assert rows["obj-checksum"]["reject_code"] == "ERR_CROSS_MDL_MEDIA"
    assert rows["obj-escaped"]["reject_stage"] == "placeholder_lint"  # earlier verdicts pass through


def test_clean_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stage", "nope", "--input", "x", "--output", str(tmp_path)]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert main(["stage", "placeholder_lint", "--input", "x", "--output", str(tmp_path), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


def test_lint_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = {"id": "a", "kind": "text", "content": "hi", "media": []}
    bad = {
        "id": "b",
        "kind": "object",
        "content": "&lt;|image_start|&gt;",
        "media": [{"modality": "image", "uri": "x"}],
    }
    shard = tmp_path / "rel" / "jsonl" / "object-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text(json.dumps(good) + "\n")
    assert main(["lint", str(tmp_path / "rel")]) == 0
    shard.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert main(["lint", str(tmp_path / "rel")]) == 1
    out = capsys.readouterr().out
    assert f"{shard}: b: escaped_sentinel: HTML-escaped start sentinel" in out
    shard.write_text("{not json\n")
    assert main(["lint", str(shard)]) == 1
    assert "unreadable_shard" in capsys.readouterr().out
