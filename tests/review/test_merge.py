"""``xmodal review merge`` on hand-made verdicts about a hand-made release: the review table, the
agreement arithmetic with Wilson intervals, the gates, and verdicts that do not match the release."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.review.agreement import wilson
from pipeline.review.release_rows import Release
from pipeline.review.sample import Sample, SampledRow


def verdict(row: SampledRow, said: str, reviewer: str = "ana", minute: int = 0, code: str | None = None,
            note: str = "") -> dict[str, Any]:
    return {"format": "xmodal-review-verdict/1", "dataset": "sw", "version": "v1", "seed": 0, "key": row.key,
            "id": row.record["id"], "kind": row.record["kind"], "check": row.check, "stratum": row.strata[0],
            "verdict": said, "code": code, "reviewer": reviewer, "note": note,
            "at": f"2026-01-05T10:{minute:02d}:00.000Z"}


def write(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def by_stratum(sample: Sample, name: str) -> list[SampledRow]:
    return [r for r in sample.rows if r.strata[0] == name]


def hand_made(sample: Sample) -> list[dict[str, Any]]:
    """TEMPORAL 2/2 agreed, OBJ_BBOX 1/2, TOKEN_FMT one contested row and one agreed; kept rows:
    one object missed (named OBJ_FLIP), one negative missed (no code), text agreed after a
    changed mind."""
    temporal = by_stratum(sample, "reject:ERR_CROSS_MDL_TEMPORAL")
    bbox = by_stratum(sample, "reject:ERR_CROSS_MDL_OBJ_BBOX")
    token = by_stratum(sample, "reject:ERR_CROSS_MDL_TOKEN_FMT")
    objects, texts = by_stratum(sample, "kept:object"), by_stratum(sample, "kept:text")
    negatives = [r for r in sample.rows if r.strata[0].startswith("negative:")][:2]
    assert len(temporal) == len(bbox) == len(token) == len(objects) == len(texts) == len(negatives) == 2
    return [
        verdict(temporal[0], "agree"), verdict(temporal[1], "agree"),
        verdict(bbox[0], "agree"), verdict(bbox[1], "disagree", note="the box is fine"),
        verdict(token[0], "agree"), verdict(token[0], "disagree", reviewer="bob"),
        verdict(token[1], "agree"), verdict(token[1], "agree", reviewer="bob"),
        verdict(objects[0], "disagree", code="ERR_CROSS_MDL_OBJ_FLIP", note="caption says left"),
        verdict(objects[1], "agree"),
        verdict(texts[0], "disagree", minute=1), verdict(texts[0], "agree", minute=2), verdict(texts[1], "agree"),
        verdict(negatives[0], "disagree"), verdict(negatives[1], "agree"),
    ]


def test_wilson_interval_matches_the_closed_form_tables() -> None:
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(2, 6) == pytest.approx((0.0968, 0.7000), abs=1e-4)
    assert wilson(2, 2) == pytest.approx((0.3424, 1.0), abs=1e-4)
    assert wilson(0, 0) is None


def shard_digests(release: Release) -> dict[str, str]:
    root = Path(release.uri)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_merge_records_review_status_and_agreement(merge_copy: Release, merge_sample: Sample,
                                                   tmp_path: Path) -> None:
    before = shard_digests(merge_copy)
    assert main(["review", "merge", write(tmp_path / "v.jsonl", hand_made(merge_sample)), merge_copy.uri]) == 0
    assert shard_digests(merge_copy) == before  # the release is never written
    review = Path(merge_copy.uri).parent / "_reviews" / "v1"
    figures = json.loads((review / "agreement.json").read_text())
    assert figures["reviewers"] == ["ana", "bob"] and figures["rows"] == 12 and figures["contested"] == 1
    assert figures["verdicts"] == 14  # ana's first verdict on the text row was replaced
    p = figures["precision"]
    assert (p["ERR_CROSS_MDL_TEMPORAL"]["k"], p["ERR_CROSS_MDL_TEMPORAL"]["n"]) == (2, 2)
    assert p["ERR_CROSS_MDL_TEMPORAL"]["wilson95"] == pytest.approx([0.3424, 1.0], abs=1e-4)
    assert (p["ERR_CROSS_MDL_OBJ_BBOX"]["k"], p["ERR_CROSS_MDL_OBJ_BBOX"]["n"], p["ERR_CROSS_MDL_OBJ_BBOX"]["rate"]) \
        == (1, 2, 0.5)
    assert p["ERR_CROSS_MDL_OBJ_BBOX"]["wilson95"] == pytest.approx([0.0945, 0.9055], abs=1e-4)
    assert (p["ERR_CROSS_MDL_TOKEN_FMT"]["k"], p["ERR_CROSS_MDL_TOKEN_FMT"]["n"]) == (1, 1)  # the tie counts nowhere
    miss = figures["miss_rate"]
    assert (miss["all"]["k"], miss["all"]["n"]) == (2, 6)
    assert miss["all"]["wilson95"] == pytest.approx([0.0968, 0.7000], abs=1e-4)
    assert {g: (e["k"], e["n"]) for g, e in miss["by_group"].items()} == {
        "object": (1, 2), "text": (0, 2), "negatives": (1, 2)}
    assert {c: (e["k"], e["n"]) for c, e in miss["by_code"].items()} == {
        "ERR_CROSS_MDL_OBJ_FLIP": (1, 6), "unspecified": (1, 6)}

    table = pq.read_table(review / "review.parquet").to_pylist()
    status = {r["key"]: r["review_status"] for r in table}
    bbox = by_stratum(merge_sample, "reject:ERR_CROSS_MDL_OBJ_BBOX")
    token = by_stratum(merge_sample, "reject:ERR_CROSS_MDL_TOKEN_FMT")
    objects = by_stratum(merge_sample, "kept:object")
    assert status[bbox[0].key] == "rejected" and status[bbox[1].key] == "approved"
    assert status[token[0].key] == "sampled"
    assert status[objects[0].key] == "rejected" and status[objects[1].key] == "approved"
    flip = next(r for r in table if r["key"] == objects[0].key)
    assert flip["missed_code"] == "ERR_CROSS_MDL_OBJ_FLIP" and flip["notes"] == ["ana: caption says left"]
    assert (flip["shard"], flip["row"], flip["id"]) == (objects[0].shard.path, objects[0].row, objects[0].record["id"])

    report = (review / "report.html").read_text()
    assert "Human review" in report and "the box is fine" in report
    assert "href='../rejects/" not in report and "href='../../v1/rejects/" in report


def test_a_second_file_adds_to_the_first(merge_copy: Release, merge_sample: Sample, tmp_path: Path) -> None:
    temporal = by_stratum(merge_sample, "reject:ERR_CROSS_MDL_TEMPORAL")
    a = write(tmp_path / "a.jsonl", [verdict(temporal[0], "agree")])
    assert main(["review", "merge", a, merge_copy.uri]) == 0
    b = write(tmp_path / "b.jsonl", [verdict(temporal[0], "disagree", reviewer="bob"),
                                     verdict(temporal[1], "agree", reviewer="bob")])
    assert main(["review", "merge", b, merge_copy.uri]) == 0
    assert main(["review", "merge", b, merge_copy.uri]) == 0  # the same file again changes nothing
    figures = json.loads((Path(merge_copy.uri).parent / "_reviews" / "v1" / "agreement.json").read_text())
    assert figures["reviewers"] == ["ana", "bob"] and figures["verdicts"] == 3
    assert figures["contested"] == 1 and figures["precision"]["ERR_CROSS_MDL_TEMPORAL"]["n"] == 1


@pytest.mark.parametrize(("flags", "code", "says"), [
    (["--precision-min", "0.9"], 2, "review_precision_min.ERR_CROSS_MDL_OBJ_BBOX FAILED"),
    (["--precision-min", "ERR_CROSS_MDL_TEMPORAL=0.9", "--miss-rate-max", "0.5"], 0, "passed"),
    (["--miss-rate-max", "ERR_CROSS_MDL_OBJ_FLIP=0.1"], 2, "miss rate of ERR_CROSS_MDL_OBJ_FLIP"),
    (["--miss-rate-max", "ERR_CROSS_MDL_MIRROR=0.1"], 0, "= 0 <= 0.1"),  # nobody named it: 0 of 6
    (["--precision-min", "ERR_CROSS_MDL_TEMPORAL=0.5", "--gate-on", "wilson"], 2, "by 0.1576"),
    (["--precision-min", "ERR_CROSS_MDL_MEDIA=0.5"], 2, "was not measured"),
])
def test_review_gates(flags: list[str], code: int, says: str, merge_copy: Release, merge_sample: Sample,
                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "v.jsonl", hand_made(merge_sample))
    assert main(["review", "merge", path, merge_copy.uri, *flags]) == code
    captured = capsys.readouterr()
    assert says in (captured.err if code else captured.out)
    gates = json.loads((Path(merge_copy.uri).parent / "_reviews" / "v1" / "agreement.json").read_text())["gates"]
    assert gates and all(g["passed"] == (code == 0) for g in gates if says in g["detail"])


def test_gates_from_a_yaml_file(merge_copy: Release, merge_sample: Sample, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gates.yaml").write_text("gates:\n  review_precision_min: {ERR_CROSS_MDL_OBJ_BBOX: 0.4}\n"
                                         "  review_miss_rate_max: {all: 0.2}\n  r_at_1_min: 0.5\n")
    path = write(tmp_path / "v.jsonl", hand_made(merge_sample))
    assert main(["review", "merge", path, merge_copy.uri, "--gates", str(tmp_path / "gates.yaml")]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 review gate(s) failed" in err and "review_miss_rate_max.all FAILED" in err


@pytest.mark.parametrize(("change", "says"), [
    ({"id": "not-this-row"}, "v.jsonl:1: field id: row"),
    ({"check": "ERR_CROSS_MDL_MEDIA"}, "v.jsonl:1: field check: the release decided"),
    ({"key": "rejects/x/ERR_CROSS_MDL_MEDIA/part-00000.parquet#0"}, "v.jsonl:1: field key: the release has no shard"),
    ({"key": "data/text-00000.parquet#999"}, "no row 999"),
    ({"version": "v2"}, "v.jsonl:1: verdict for sw/v2, but the release is sw/v1"),
    ({"verdict": "maybe"}, "v.jsonl:1: field verdict"),
    ({"reviewer": " "}, "v.jsonl:1: field reviewer"),
    ({"extra": 1}, "v.jsonl:1: field extra"),
])
def test_verdicts_that_do_not_match_the_release_are_refused(change: dict[str, Any], says: str, merge_copy: Release,
                                                            merge_sample: Sample, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    row = by_stratum(merge_sample, "kept:text")[0]
    path = write(tmp_path / "v.jsonl", [verdict(row, "agree") | change])
    assert main(["review", "merge", path, merge_copy.uri]) == 2
    assert says in capsys.readouterr().err
    assert not (Path(merge_copy.uri).parent / "_reviews").exists()


def test_a_line_that_is_not_json_names_its_line(merge_copy: Release, merge_sample: Sample, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    good = json.dumps(verdict(by_stratum(merge_sample, "kept:text")[0], "agree"))
    (tmp_path / "v.jsonl").write_text(good + "\n\n{not json\n")
    assert main(["review", "merge", str(tmp_path / "v.jsonl"), merge_copy.uri]) == 2
    assert "v.jsonl:3: not JSON" in capsys.readouterr().err
