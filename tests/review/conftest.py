"""Releases for the review tests.

``review_release``: a small real release of the sample world, built once per session by a whole
local build (every model-free check, segment alignment, rule-made negatives and a flip-prone
augmentation, a small shard target so that each kind spans several shards). What it rejects
follows the sample world's faults, so tests on it assert relations, not counts.

``merge_release``: a hand-made release with known rows (two rejected by each of three codes, two
kept objects, two kept texts, two negative pairs), written by the release writer, for the merge
arithmetic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.build import run_config
from pipeline.release.writer import InputFingerprint, write_release
from pipeline.review.page import write_review_page
from pipeline.review.release_rows import Release, open_release
from pipeline.review.sample import Sample, draw_sample
from pipeline.run.config import parse_config
from pipeline.world import generate_world
from schemas.records import ROW_SCHEMA
from stages.registry import MODEL_FREE_CHECKS

REJECTS = (("segment_checks", "ERR_CROSS_MDL_TEMPORAL"), ("object_boxes", "ERR_CROSS_MDL_OBJ_BBOX"),
           ("placeholder_lint", "ERR_CROSS_MDL_TOKEN_FMT"))


@pytest.fixture(scope="session")
def review_release_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    world = tmp_path_factory.mktemp("review-world")
    generate_world(world, n=30, fault_rate=0.3, seed=3)
    cfg = parse_config({
        "dataset": "sw",
        "version": "v1",
        "inputs": [str(world / "manifest.jsonl")],
        "stages": ["document_interleave", *MODEL_FREE_CHECKS, "segment_align",
                   {"name": "negatives_text", "params": {"strategies": ["replace_colour", "swap_adjectives"],
                                                         "max_per_caption": 1}},
                   {"name": "object_augment", "params": {"media_out": str(world / "augmented"), "copies": 2,
                                                         "seed": 0}}],
        "release": {"output": str(tmp_path_factory.mktemp("review-releases")), "shard_target_bytes": 20_000},
    })
    return run_config(cfg, local=True).uri


@pytest.fixture(scope="session")
def review_release(review_release_uri: str) -> Release:
    return open_release(review_release_uri)


@pytest.fixture(scope="session")
def review_sample(review_release: Release) -> Sample:
    return draw_sample(review_release, seed=0, per_code=2, kept=2)


@pytest.fixture(scope="session")
def review_page(review_release: Release, review_sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review-page") / "page"
    write_review_page(review_release, review_sample, out)
    return out


@pytest.fixture()
def release_copy(review_release_uri: str, tmp_path: Path) -> Release:
    """A private copy of the release (dataset/version) whose review directory a test may write."""
    dest = tmp_path / "sw" / "v1"
    shutil.copytree(review_release_uri, dest)
    return open_release(str(dest))


def hand_made_table() -> pa.Table:
    rows: list[dict[str, object]] = []
    for stage, code in REJECTS:
        for i in range(2):
            rows.append({"id": f"{code[14:].lower()}-{i}", "kind": "object", "content": "A red circle.",
                         "status": "rejected", "reject_stage": stage, "reject_code": code,
                         "reject_detail": f"made by hand ({code}, {i})"})
    for kind in ("object", "text"):
        for i in range(2):
            rows.append({"id": f"{kind}-{i}", "kind": kind, "content": f"A kept {kind} {i}.", "status": "ok"})
    negatives = [{"id": f"object-{i}-neg", "kind": "object", "content": "A kept object.", "status": "ok",
                  "parent_id": f"object-{i}", "negative_type": "replace_colour", "negative_text": "A blue circle.",
                  "positive_text": "A red circle.", "negative_similarity": 0.2, "positive_similarity": 0.6}
                 for i in range(2)]
    base = pa.Table.from_pylist([{k: v for k, v in r.items() if k in ROW_SCHEMA.names} | {"source": "t", "license": "x"}
                                 for r in rows + negatives], schema=ROW_SCHEMA)
    for name, typ in (("negative_type", pa.string()), ("negative_text", pa.string()), ("positive_text", pa.string()),
                      ("negative_similarity", pa.float64()), ("positive_similarity", pa.float64())):
        base = base.append_column(name, pa.array([r.get(name) for r in rows + negatives], typ))
    return base


@pytest.fixture(scope="session")
def merge_release_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    report = "<!doctype html><html><body><h1>sw v1</h1><a href='../rejects/x/'>rejects</a></body></html>"
    result = write_release(hand_made_table(), root=str(tmp_path_factory.mktemp("merge-releases")), dataset="sw",
                           version="v1", inputs=[InputFingerprint("hand-made.jsonl", 0, "0" * 64, 10)],
                           config_hash="c", code_version="t", vocab={"image": 8192, "audio": 8192, "video": 8192},
                           report_html=report)
    return result.uri


@pytest.fixture(scope="session")
def merge_sample(merge_release_uri: str) -> Sample:
    return draw_sample(open_release(merge_release_uri), seed=0, per_code=5, kept=5)


@pytest.fixture()
def merge_copy(merge_release_uri: str, tmp_path: Path) -> Release:
    """A private copy of the hand-made release whose review directory a test may write."""
    dest = tmp_path / "sw" / "v1"
    shutil.copytree(merge_release_uri, dest)
    return open_release(str(dest))
