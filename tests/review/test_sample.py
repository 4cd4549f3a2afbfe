"""The review sample: every reject code and every kept kind, flipped rows with their parents,
seeded and independent of shard order; and the ``xmodal review`` command around it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.cli import main
from pipeline.review.release_rows import Release, Shard, rows_at
from pipeline.review.sample import Sample, draw_sample, stratum_masks


def test_every_code_and_kind_is_sampled(review_release: Release, review_sample: Sample) -> None:
    codes = {s.code for s in review_release.shards if s.group == "rejects"}
    kinds = {s.kind for s in review_release.shards if s.group == "data"}
    strata = {name for r in review_sample.rows for name in r.strata}
    assert {f"reject:{c}" for c in codes} <= strata
    assert {f"kept:{k}" for k in kinds} <= strata
    for name, population in review_sample.population.items():
        limit = 2  # per_code and kept of the fixture
        assert sum(name in r.strata for r in review_sample.rows) == min(limit, population), name
    assert len({r.key for r in review_sample.rows}) == len(review_sample.rows)  # each row once


def test_rows_carry_what_the_release_decided(review_release: Release, review_sample: Sample) -> None:
    for r in review_sample.rows:
        back = rows_at(review_release, r.shard, [r.row], ["id", "reject_code"])[r.row]
        assert back["id"] == r.record["id"]
        if r.shard.group == "rejects":
            assert r.check == back["reject_code"] == r.shard.code and r.record["reject_detail"]
        else:
            assert r.check == "kept"
        assert "decoded_images" not in r.record and "clip_image_emb" not in r.record


def test_flipped_rows_come_with_their_parent(review_sample: Sample) -> None:
    flipped = [r for r in review_sample.rows if "flipped" in r.strata]
    assert flipped
    for r in flipped:
        assert "Flip" in r.record["augment_transforms"]
        assert r.parent is not None and r.parent["id"] == r.record["parent_id"]


def test_same_seed_same_sample_whatever_the_shard_order(review_release: Release, review_sample: Sample) -> None:
    again = draw_sample(review_release, seed=0, per_code=2, kept=2)
    assert [r.key for r in again.rows] == [r.key for r in review_sample.rows]
    reordered_shards = tuple(dataclasses.replace(s, index=i) for i, s in enumerate(reversed(review_release.shards)))
    reordered = Release(review_release.uri, review_release.manifest, reordered_shards)
    keys = {r.key for r in review_sample.rows}
    assert {r.key for r in draw_sample(reordered, seed=0, per_code=2, kept=2).rows} == keys
    other = draw_sample(review_release, seed=1, per_code=2, kept=2)
    assert {r.key for r in other.rows} != {r.key for r in review_sample.rows}


def test_laterality_and_negative_strata_from_a_batch() -> None:
    data = Shard(0, "data/object-00000.parquet", "data", "object", 4)
    batch = pa.RecordBatch.from_pylist([
        {"kind": "object", "parent_id": None, "laterality": True, "augment_transforms": None},
        {"kind": "object", "parent_id": "a", "laterality": True, "augment_transforms": '[{"name":"Affine"}]'},
        {"kind": "object", "parent_id": "a", "laterality": None, "augment_transforms": '[{"name":"HorizontalFlip"}]'},
        {"kind": "object", "parent_id": None, "laterality": None, "augment_transforms": None},
    ])
    masks = stratum_masks(data, batch)
    assert masks["laterality"].tolist() == [True, True, False, False]
    assert masks["flipped"].tolist() == [False, False, True, False]
    assert masks["kept:object"].tolist() == [True, False, False, True]
    negatives = Shard(1, "negatives/pairs-00000.parquet", "negatives", "negatives", 3)
    nb = pa.RecordBatch.from_pylist([{"negative_type": "a"}, {"negative_type": "b"}, {"negative_type": None}])
    assert {k: v.tolist() for k, v in stratum_masks(negatives, nb).items()} == {
        "negative:a": [True, False, False], "negative:b": [False, True, False],
        "negative:unknown": [False, False, True]}


def test_cli_writes_the_page_and_says_what_it_sampled(review_release_uri: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "review"
    assert main(["review", review_release_uri, "--out", str(out), "--per-code", "1", "--kept", "1"]) == 0
    printed = capsys.readouterr().out
    codes = {p.parent.name for p in Path(review_release_uri).glob("rejects/*/*/part-*.parquet")}
    assert len(codes) >= 2 and f"page: {out / 'index.html'}" in printed
    assert all(f"reject:{code}" in printed for code in codes), (codes, printed)  # one stratum per code
    sample = json.loads((out / "sample.json").read_text())
    assert sample["dataset"] == "sw" and sample["version"] == "v1" and sample["seed"] == 0
    assert all(f"data-key='{r['key']}'" in (out / "index.html").read_text() for r in sample["rows"])
    # a second run over the same directory replaces the page
    assert main(["review", review_release_uri, "--out", str(out), "--kept", "0", "--per-code", "1"]) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["review", "{release}"], "--out DIR is required"),
    (["review", "{release}", "--out", "{tmp}/x", "--port", "9"], "--port does not apply to `xmodal review RELEASE`"),
    (["review", "{tmp}", "--out", "{tmp}/x"], "no manifest.json"),
    (["review", "serve", "{tmp}"], "no review page here"),
    (["review", "merge", "{tmp}/v.jsonl"], "usage: xmodal review merge"),
    (["review", "a", "b"], "expected one RELEASE"),
])
def test_user_errors_are_one_line(argv: list[str], message: str, review_release_uri: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(release=review_release_uri, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_directory_holding_other_things_is_refused(review_release_uri: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["review", review_release_uri, "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").exists()
