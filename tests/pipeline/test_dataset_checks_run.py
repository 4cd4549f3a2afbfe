"""Dataset-level checks in a whole run, on a fresh sample world with template captions and
near-duplicate copies: in-process with the demo model's scores (the issue's figures: >= 95% of
the injected faults caught, <= 1% of clean rows rejected by these codes, counts that reconcile),
evaluation leakage against planted copies, and the same verdicts on a local Ray."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.build import run_config
from pipeline.release.writer import ReleaseResult
from pipeline.run.config import parse_config
from pipeline.run.local_runner import read_inputs, run_stages
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from stages.caption_templates import normalise_caption
from stages.image_fingerprint import ImageFingerprint
from stages.media_check import MediaCheck

MAX_USES = 5
FINGERPRINT = {"embedding_column": "image_fingerprint"}
MODEL_FREE = ["placeholder_lint", "media_check", "image_fingerprint"]
CLIP = [{"name": "decode_media", "params": {"image_size": 64, "resize_mode": "squash", "audio": False,
                                            "video_frames": 4}},
        {"name": "clip_score", "params": {"checkpoint": "models/demo-clip", "min_caption_score": 0.4171}}]


@dataclass
class World:
    root: Path
    records: dict[str, dict[str, Any]]  # the manifest's lines that parse, by id
    faults: dict[str, str]  # id -> fault


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("dataset-world")
    generate_world(root, n=400, fault_rate=0.1, seed=11, dataset_faults=0.2)
    records = {}
    for line in (root / "manifest.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    with (root / "faults.tsv").open() as fh:
        faults = {r["id"]: r["fault"] for r in csv.DictReader(fh, delimiter="\t")}
    return World(root, records, faults)


def config(world: World, out: Path, stages: list[Any], **checks: Any) -> Any:
    return parse_config({
        "dataset": "dw", "version": "v1", "inputs": [str(world.root / "manifest.jsonl")], "stages": stages,
        "release": {"output": str(out), "overwrite": True}, "ray": {"num_cpus": 2},
        "dataset_checks": {"after": stages[-1]["name"] if isinstance(stages[-1], dict) else stages[-1],
                           "templates": {**FINGERPRINT, "max_uses": MAX_USES}, "duplicates": FINGERPRINT,
                           **checks},
    })


def release_rows(result: ReleaseResult, columns: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every row of the release (data and rejects) by id: status, reject_* and ``columns``."""
    out = {}
    for path in sorted(Path(result.uri).glob("*/**/*.parquet")):
        table = pq.read_table(path)
        names = [c for c in ("id", "status", "reject_stage", "reject_code", "reject_detail", *columns)
                 if c in table.column_names]
        for row in table.select(names).to_pylist():
            out.setdefault(row["id"], {"status": "ok", "reject_stage": None, **row})  # data shards: no status
    return out


def dataset_rejects(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {i: (r["reject_code"], r["reject_detail"]) for i, r in rows.items()
            if r.get("reject_stage") == "dataset_checks"}


def test_injected_templates_and_copies_are_caught_and_clean_rows_kept(world: World, tmp_path: Path) -> None:
    result = run_config(config(world, tmp_path, MODEL_FREE + CLIP), local=True)
    rows = release_rows(result, ("clip_score",))
    caught = dataset_rejects(rows)
    elsewhere = {i for i, r in rows.items() if r["status"] != "ok" and r["reject_stage"] != "dataset_checks"}

    # near-duplicate copies: each rejected, naming a kept row with the same content (its source)
    copies = [i for i, f in world.faults.items() if f == "near_duplicate_image" and i not in elsewhere]
    found = [i for i in copies if caught.get(i, ("",))[0] == ReasonCode.DUPLICATE]
    assert len(copies) >= 30 and len(found) >= 0.95 * len(copies)
    for i in found:
        kept = caught[i][1].split()[2]
        assert rows[kept]["status"] == "ok" and world.records[kept]["content"] == world.records[i]["content"]

    # templates: every group loses all its uses but the MAX_USES best-scoring ones
    groups: dict[str | None, list[str]] = defaultdict(list)
    for i, f in world.faults.items():
        if f == "template_caption" and i not in elsewhere:
            groups[normalise_caption(world.records[i]["content"])].append(i)
    expected = sum(max(0, len(g) - MAX_USES) for g in groups.values())
    hits = 0
    for members in groups.values():
        rejected = [i for i in members if caught.get(i, ("",))[0] == ReasonCode.TEMPLATE]
        kept = [i for i in members if i not in rejected]
        assert len(kept) == min(len(members), MAX_USES)
        if rejected:
            assert min(rows[i]["clip_score"] for i in kept) >= max(rows[i]["clip_score"] for i in rejected)
        hits += len(rejected)
    assert len(groups) >= 4 and expected >= 10 and hits >= 0.95 * expected

    # clean rows: at most 1% rejected by these codes
    clean = [i for i in rows if i in world.records and i not in world.faults]
    false = [i for i in clean if i in caught]
    assert len(false) <= 0.01 * len(clean), [caught[i] for i in false]

    # the rejects are in the release's shards and counts, with their codes
    counts = result.manifest["counts"]
    assert counts["input_records"] == counts["kept"] + counts["rejected"] == 400
    for code in (ReasonCode.TEMPLATE, ReasonCode.DUPLICATE):
        shard_rows = sum(pq.read_metadata(p).num_rows for p in
                         (Path(result.uri) / "rejects" / "dataset_checks" / code).glob("*.parquet"))
        assert counts["rejected_by_code"][code] == shard_rows == sum(1 for c, _ in caught.values() if c == code)
    timing = next(t for t in result.manifest["stage_timings"] if t["stage"] == "dataset_checks")
    assert timing["summary"]["rejected"]["template"] == hits
    report = (Path(result.uri) / "report" / "index.html").read_text()
    top = timing["summary"]["templates"][0]["caption"]
    assert "Dataset-level checks" in report and top in report and "data:image/png;base64" in report


def _eval_sets(world: World, out: Path) -> tuple[dict[str, tuple[str, str]], list[dict[str, str]]]:
    """Two evaluation sets of copied clean rows: staged rows with fingerprints (found by image)
    and a JSONL manifest (found by caption). Returns planted id -> (set, evaluation id)."""
    def texts(r: dict[str, Any]) -> list[str | None]:
        return [normalise_caption(t) for t in [r.get("content"), *(r.get("captions") or [])] if isinstance(t, str)]

    uses: dict[str | None, int] = defaultdict(int)
    for r in world.records.values():
        for t in set(texts(r)):
            uses[t] += 1
    # rows whose every text is their own (no other row, copy or template shares one)
    unique = [i for i, r in sorted(world.records.items()) if i.startswith("obj-") and i not in world.faults
              and all(uses[t] == 1 for t in texts(r)) and len((texts(r)[0] or "").split()) >= 6]
    planted: dict[str, tuple[str, str]] = {}
    lines: dict[str, list[str]] = {"images": [], "captions": []}
    for name, ids in (("images", unique[:6]), ("captions", unique[6:12])):
        for i in ids:
            lines[name].append(json.dumps({**world.records[i], "id": f"eval-{i}"}))
            planted[i] = (f"heldout-{name}", f"eval-{i}")
    manifests = {}
    for name, text in lines.items():
        manifests[name] = world.root / f"eval-{name}.jsonl"  # beside the world: its media resolve
        manifests[name].write_text("\n".join(text) + "\n")
    staged = run_stages(read_inputs([str(manifests["images"])], 1 << 22), [MediaCheck(), ImageFingerprint()]).table
    pq.write_table(staged, out / "eval-images.parquet")
    return planted, [{"name": "heldout-images", "path": str(out / "eval-images.parquet")},
                     {"name": "heldout-captions", "path": str(manifests["captions"])}]


def _leakage_config(world: World, tmp_path: Path) -> tuple[Any, dict[str, tuple[str, str]]]:
    planted, eval_sets = _eval_sets(world, tmp_path)
    cfg = config(world, tmp_path / "rel", MODEL_FREE, score_column=None,
                 leakage={"eval_sets": eval_sets, **FINGERPRINT})
    return cfg, planted


def test_leakage_finds_every_planted_copy_of_an_evaluation_row(world: World, tmp_path: Path) -> None:
    cfg, planted = _leakage_config(world, tmp_path)
    caught = dataset_rejects(release_rows(run_config(cfg, local=True)))
    leaks = {i: d for i, (c, d) in caught.items() if "evaluation set" in d}
    assert set(leaks) == set(planted), {i: leaks[i] for i in set(leaks) ^ set(planted) if i in leaks}
    for i, (name, eval_id) in planted.items():
        assert f"evaluation row {eval_id} of evaluation set '{name}'" in leaks[i]
        assert caught[i][0] == ReasonCode.DUPLICATE


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_ray_gives_the_same_verdicts(ray_local: None, world: World, tmp_path: Path) -> None:
    cfg, planted = _leakage_config(world, tmp_path)
    on_ray = run_config(cfg)
    local = run_config(cfg.model_copy(update={"version": "v2"}), local=True)
    caught = dataset_rejects(release_rows(on_ray))
    assert caught == dataset_rejects(release_rows(local))
    assert planted.keys() <= caught.keys() and len(caught) > len(planted) + 40
    counts = on_ray.manifest["counts"]
    assert counts == local.manifest["counts"] and counts["input_records"] == counts["kept"] + counts["rejected"]
    timing = next(t for t in on_ray.manifest["stage_timings"] if t["stage"] == "dataset_checks")
    assert timing["rows_in"] == 400 and timing["summary"]["rejected"]["leakage"] == len(planted)
    assert not [p.name for p in (tmp_path / "rel" / "dw").iterdir() if p.name.startswith(".")]  # staging removed


def test_a_check_column_no_stage_writes_is_a_config_error(world: World, tmp_path: Path) -> None:
    from pipeline.run.config import ConfigError

    with pytest.raises(ConfigError, match="dataset_checks.templates.embedding_column: no stage up to "
                                          "'media_check' writes 'image_fingerprint'"):
        config(world, tmp_path, ["media_check"], score_column=None)
