"""Review of a release in S3 (a real S3-compatible server, moto, on 127.0.0.1): the sample and
the page are read from the bucket, and the merge writes its review directory there, beside the
release, leaving the release's objects as they were."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from pipeline.cli import main
from pipeline.review.release_rows import open_release
from pipeline.review.sample import draw_sample

pytestmark = pytest.mark.s3


def test_sample_and_merge_a_release_in_s3(merge_release_uri: str, s3_server: str, s3_bucket: str,
                                          tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    root = Path(merge_release_uri)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.put_object(Bucket=s3_bucket, Key=f"review/sw/v1/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    s3.put_object(Bucket=s3_bucket, Key="review/sw/latest", Body=b"v1\n")
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="review/sw/v1/")["Contents"]}

    release = open_release(f"s3://{s3_bucket}/review/sw")  # through latest
    assert release.uri == f"s3://{s3_bucket}/review/sw/v1"
    sample = draw_sample(release, seed=0, per_code=5, kept=5)
    assert main(["review", release.uri, "--out", str(tmp_path / "page"), "--per-code", "5", "--kept", "5"]) == 0
    assert len(json.loads((tmp_path / "page" / "sample.json").read_text())["rows"]) == len(sample.rows) == 12

    row = next(r for r in sample.rows if r.check != "kept")
    line = {"format": "xmodal-review-verdict/1", "dataset": "sw", "version": "v1", "key": row.key,
            "id": row.record["id"], "check": row.check, "verdict": "agree", "reviewer": "ana",
            "at": "2026-01-05T10:00:00Z"}
    (tmp_path / "v.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["review", "merge", str(tmp_path / "v.jsonl"), release.uri, "--precision-min", "0.9"]) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="review/sw/_reviews/v1/")["Contents"]}
    assert keys == {f"review/sw/_reviews/v1/{n}" for n in
                    ("review.parquet", "agreement.json", "verdicts.jsonl", "report.html")}
    figures = json.loads(s3.get_object(Bucket=s3_bucket, Key="review/sw/_reviews/v1/agreement.json")["Body"].read())
    assert figures["precision"][row.check]["k"] == 1 and figures["gates"][0]["passed"]
    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="review/sw/v1/")["Contents"]}
    assert after == before
