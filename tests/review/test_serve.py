"""``xmodal review serve``: a real HTTP server on 127.0.0.1 that serves the page and appends the
verdicts POSTed to it, refusing anything that is not a verdict of this review."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.review.sample import Sample
from pipeline.review.serve import ReviewServer, make_server


@pytest.fixture()
def server(review_page: Path, tmp_path: Path) -> Iterator[ReviewServer]:
    import shutil

    page = tmp_path / "page"
    shutil.copytree(review_page, page)
    srv = make_server(page, 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/x-ndjson"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def a_verdict(sample: Sample, **change: Any) -> dict[str, Any]:
    row = sample.rows[0]
    return {"format": "xmodal-review-verdict/1", "dataset": "sw", "version": "v1", "seed": 0, "key": row.key,
            "id": row.record["id"], "kind": row.record["kind"], "check": row.check, "stratum": row.strata[0],
            "verdict": "agree", "code": None, "reviewer": "ana", "note": "", "at": "2026-01-05T10:00:00Z"} | change


def test_posted_verdicts_are_appended(server: ReviewServer, review_sample: Sample) -> None:
    assert server.server_address[0] == "127.0.0.1"
    one = json.dumps(a_verdict(review_sample)).encode()
    assert post(server.url + "verdicts", one) == (200, {"saved": 1, "total": 1})
    two = b"\n".join(json.dumps(a_verdict(review_sample, verdict=v, note=v)).encode() for v in ("disagree", "agree"))
    assert post(server.url + "verdicts", two) == (200, {"saved": 2, "total": 3})
    lines = [json.loads(x) for x in (server.directory / "verdicts.jsonl").read_text().splitlines()]
    assert [x["verdict"] for x in lines] == ["agree", "disagree", "agree"] and lines[1]["note"] == "disagree"
    with urllib.request.urlopen(server.url + "verdicts.jsonl", timeout=30) as resp:
        assert len(resp.read().splitlines()) == 3
    with urllib.request.urlopen(server.url, timeout=30) as resp:
        assert b"section class='sample'" in resp.read()


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"verdict": "maybe"}, 400, "body:1: field verdict"),
    ({"dataset": "other"}, 400, "verdict for other/v1, but this review is of sw/v1"),
    ({"key": "nope"}, 400, "body:1: field key"),
])
def test_bad_verdicts_are_refused_and_not_written(body: dict[str, Any], status: int, says: str,
                                                  server: ReviewServer, review_sample: Sample) -> None:
    code, answer = post(server.url + "verdicts", json.dumps(a_verdict(review_sample, **body)).encode())
    assert code == status and says in answer["error"]
    assert not (server.directory / "verdicts.jsonl").exists()


def test_posts_elsewhere_and_empty_bodies_are_refused(server: ReviewServer) -> None:
    assert post(server.url + "index.html", b"{}")[0] == 404
    assert post(server.url + "verdicts", b"not json")[1]["error"].startswith("body:1: not JSON")
