"""The sample world's evaluation set (``xmodal sample --eval-set N``) and the leakage check on it,
as the demo runs it: a manifest evaluation set, fingerprinted when it is read, against a fresh
world with planted copies of some of its rows; every planted copy is found on a local Ray,
naming its evaluation row, and no other row is."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.build import run_config
from pipeline.cli import main
from pipeline.release.report_dataset_checks import dataset_checks_sections
from pipeline.run.config import parse_config
from pipeline.run.eval_sets import eval_index
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from stages.dataset_checks import EvalSet

FINGERPRINT = {"embedding_column": "image_fingerprint"}
EVAL_ROWS = 24
SET_NAME = "heldout"


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leak-world")
    generate_world(root, n=160, fault_rate=0.1, seed=5, dataset_faults=0.2, eval_set=EVAL_ROWS)
    return root


def test_the_eval_set_is_written_beside_the_world_and_its_copies_are_faults(world: Path) -> None:
    records = [json.loads(line) for line in (world / "eval" / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"eval-{i:05d}" for i in range(EVAL_ROWS)]
    assert all(r["kind"] == "object" and (world / "eval" / r["media"][0]["uri"]).is_file() for r in records)
    leaks = _tsv(world / "eval" / "leaks.tsv")
    assert len(leaks) == EVAL_ROWS // 4 and {x["fault"] for x in leaks} == {"eval_image_copy", "eval_caption_copy"}
    assert len({x["eval_id"] for x in leaks}) == len(leaks)
    assert {x["eval_set"] for x in leaks} == {"eval/manifest.jsonl"}
    faults = {r["id"]: r for r in _tsv(world / "faults.tsv")}
    for x in leaks:
        assert faults[x["id"]]["fault"] == x["fault"] and x["expected_code"] == ReasonCode.DUPLICATE
        assert faults[x["id"]]["expected_code"] == ReasonCode.DUPLICATE
    summary = json.loads((world / "world.json").read_text())
    assert summary["eval_set"]["records"] == EVAL_ROWS


def test_same_seed_same_eval_set(world: Path, tmp_path: Path) -> None:
    assert main(["sample", "--out", str(tmp_path), "--n", "160", "--faults", "0.1", "--seed", "5",
                 "--dataset-faults", "0.2", "--eval-set", str(EVAL_ROWS)]) == 0
    for name in ("manifest.jsonl", "faults.tsv", "world.json", "eval/manifest.jsonl", "eval/leaks.tsv"):
        assert (tmp_path / name).read_bytes() == (world / name).read_bytes(), name
    generate_world(tmp_path, n=40, seed=5)  # a world without one removes the old evaluation set
    assert not (tmp_path / "eval").exists() and "eval_set" not in (tmp_path / "world.json").read_text()


def test_a_manifest_eval_set_is_fingerprinted_for_an_image_fingerprint_check(world: Path) -> None:
    es = EvalSet(name=SET_NAME, path=str(world / "eval" / "manifest.jsonl"))
    index = eval_index(es, "image_fingerprint", 6)
    assert index.ids == [f"eval-{i:05d}" for i in range(EVAL_ROWS)] and index.emb.shape == (EVAL_ROWS, 768)
    assert len(index.texts) >= EVAL_ROWS
    captions_only = eval_index(es, "clip_image_emb", 6)  # no model here: only captions are indexed
    assert captions_only.ids == [] and captions_only.texts == index.texts


def _release_rows(uri: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(uri).glob("*/**/*.parquet")):
        table = pq.read_table(path)
        names = [c for c in ("id", "reject_stage", "reject_code", "reject_detail") if c in table.column_names]
        for row in table.select(names).to_pylist():
            out.setdefault(row["id"], {"reject_stage": None, **row})
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_the_leakage_check_finds_every_planted_copy_of_an_evaluation_row(
        ray_local: None, world: Path, tmp_path: Path) -> None:
    cfg = parse_config({
        "dataset": "lw", "version": "v1", "inputs": [str(world / "manifest.jsonl")],
        "stages": ["placeholder_lint", "media_check", "image_fingerprint"],
        "release": {"output": str(tmp_path), "overwrite": True}, "ray": {"num_cpus": 2},
        # leakage only: the other checks' shuffles would double the run (test_dataset_checks_run has them)
        "dataset_checks": {"after": "image_fingerprint", "score_column": None, "templates": {"enabled": False},
                           "duplicates": {"enabled": False},
                           "leakage": {**FINGERPRINT, "eval_sets": [
                               {"name": SET_NAME, "path": str(world / "eval" / "manifest.jsonl")}]}},
    })
    result = run_config(cfg)
    rows = _release_rows(result.uri)
    caught = {i: (r["reject_code"], r["reject_detail"]) for i, r in rows.items()
              if r["reject_stage"] == "dataset_checks"}
    planted = {x["id"]: x for x in _tsv(world / "eval" / "leaks.tsv")}
    leaks = {i: d for i, (_, d) in caught.items() if "evaluation set" in d}
    assert set(leaks) == set(planted), (set(leaks) ^ set(planted))
    for i, x in planted.items():
        assert caught[i][0] == ReasonCode.DUPLICATE
        assert f"evaluation row {x['eval_id']} of evaluation set '{SET_NAME}'" in leaks[i]
        assert leaks[i].startswith("near-duplicate" if x["fault"] == "eval_image_copy" else "caption ")
    faults = {r["id"] for r in _tsv(world / "faults.tsv")}
    assert not [caught[i] for i in caught if i not in faults]  # no clean row flagged

    timing = next(t for t in result.manifest["stage_timings"] if t["stage"] == "dataset_checks")
    summary = timing["summary"]
    by_caption = sum(x["fault"] == "eval_caption_copy" for x in planted.values())
    assert summary["rejected"]["leakage"] == len(planted)
    assert summary["leakage"][SET_NAME] | {"examples": []} == {
        "rows": len(planted), "by_image": len(planted) - by_caption, "by_caption": by_caption, "examples": []}
    first = summary["leakage"][SET_NAME]["examples"][0]
    assert first["eval_id"] == planted[first["id"]]["eval_id"]
    html = "".join(dataset_checks_sections(result.manifest["stage_timings"]))
    assert "Evaluation leakage" in html and f"{first['id']} &rarr; {SET_NAME}/{first['eval_id']}" in html
    report = (Path(result.uri) / "report" / "index.html").read_text()
    assert "Evaluation leakage" in report
