"""The media access policy (access/paths.py), table-driven through the real ingest: every way a
ref can point outside the allowed roots is refused at ingest with ``ERR_CROSS_MDL_MEDIA``
before anything is opened, with a detail that does not depend on whether the target exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from access.io import MediaPathError, open_media
from access.paths import OUTSIDE, MediaPolicy
from pipeline.cli import main
from pipeline.run.ingest import read_manifest
from stages.media_check import MediaCheck

MEDIA = "ERR_CROSS_MDL_MEDIA"
ENCODED = "percent-encoded"
FILE = "file: URIs are not accepted"
SCHEME = "is not allowed"
S3_ROOT = "s3://media-bucket/shared"

# (id, ref, None for a ref that resolves, else a piece of the refusal)
CASES: list[tuple[str, str, str | None]] = [
    ("ok-relative", "media/ok.png", None),
    ("ok-dotdot-inside", "media/../media/ok.png", None),
    ("ok-link-inside", "media/link-inside.png", None),
    ("ok-absolute-inside", "{world}/media/ok.png", None),
    ("ok-media-root", "{extra}/x.png", None),
    ("ok-relative-into-media-root", "../extra/x.png", None),
    ("ok-s3-root", f"{S3_ROOT}/a.png", None),
    ("absolute", "/etc/passwd", OUTSIDE),
    ("absolute-missing", "/etc/no-such-file-for-xmodal", OUTSIDE),
    ("absolute-proc", "/proc/self/environ", OUTSIDE),
    ("dotdot", "../outside/secret.png", OUTSIDE),
    ("dotdot-deep", "../../../../../../etc/shadow", OUTSIDE),
    ("dotdot-missing", "../outside/missing.png", OUTSIDE),
    ("percent-dotdot", "%2e%2e/outside/secret.png", ENCODED),
    ("percent-slash", "..%2Foutside%2Fsecret.png", ENCODED),
    ("percent-backslash", "..%5c..%5cetc%5cpasswd", ENCODED),
    ("percent-nul", "media/ok.png%00.jpg", ENCODED),
    ("file-absolute", "file:///etc/passwd", FILE),
    ("file-relative", "file:../outside/secret.png", FILE),
    ("file-host", "file://localhost/etc/passwd", FILE),
    ("file-inside", "file://{world}/media/ok.png", FILE),
    ("symlink-out", "media/link-out.png", OUTSIDE),
    ("symlink-dangling-out", "media/link-dangling.png", OUTSIDE),
    ("symlink-dir-out", "media/dirlink/secret.png", OUTSIDE),
    ("http", "http://example.com/a.png", SCHEME),
    ("gs", "gs://media-bucket/shared/a.png", SCHEME),
    ("data", "data:image/png;base64,iVBORw0KGgo=", SCHEME),
    ("drive-letter", "C:\\Windows\\win.ini", SCHEME),
    ("s3-other-bucket", "s3://other-bucket/shared/a.png", OUTSIDE),
    ("s3-other-prefix", "s3://media-bucket/sharedx/a.png", OUTSIDE),
    ("s3-dotdot", "s3://media-bucket/shared/../private/a.png", OUTSIDE),
    ("control-char", "media/ok.png\n", "control character"),
]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """``world/`` (the manifest's folder) with links inside it, ``outside/`` beside it, and
    ``extra/``, a configured media root."""
    world, outside, extra = tmp_path / "world", tmp_path / "outside", tmp_path / "extra"
    for d in (world / "media", outside, extra):
        d.mkdir(parents=True)
    for path in (world / "media" / "ok.png", outside / "secret.png", extra / "x.png"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(path)
    os.symlink(world / "media" / "ok.png", world / "media" / "link-inside.png")
    os.symlink(outside / "secret.png", world / "media" / "link-out.png")
    os.symlink(outside / "missing.png", world / "media" / "link-dangling.png")
    os.symlink(outside, world / "media" / "dirlink")
    return {"world": world, "outside": outside, "extra": extra}


def write_manifest(world: dict[str, Path], cases: list[tuple[str, str, str | None]]) -> Path:
    lines = []
    for rid, ref, _ in cases:
        uri = ref.format(world=world["world"], extra=world["extra"])
        lines.append(json.dumps({"id": rid, "kind": "object", "content": "<|image_start|><|image_pad|><|image_end|> x",
                                 "media": [{"modality": "image", "uri": uri}], "source": "t", "license": "CC0-1.0"}))
    manifest = world["world"] / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_every_ref_variant_gets_its_verdict_at_ingest(world: dict[str, Path]) -> None:
    manifest = write_manifest(world, CASES)
    table = read_manifest(str(manifest), media_roots=[str(world["extra"]), S3_ROOT])
    rows = {r["id"]: r for r in table.to_pylist()}
    assert len(rows) == len(CASES)
    for lineno, (rid, _ref, refusal) in enumerate(CASES, start=1):
        row = rows[rid]
        if refusal is None:
            assert row["status"] == "ok", (rid, row["reject_detail"])
            continue
        assert (row["status"], row["reject_stage"], row["reject_code"]) == ("rejected", "ingest", MEDIA), rid
        assert row["reject_detail"].startswith(f"{manifest}:{lineno}: media[0].uri ("), rid
        assert refusal in row["reject_detail"], (rid, row["reject_detail"])
    resolved = {rid: rows[rid]["media"][0]["uri"] for rid, _, refusal in CASES if refusal is None}
    ok_png = str((world["world"] / "media" / "ok.png").resolve())
    assert resolved["ok-relative"] == resolved["ok-dotdot-inside"] == resolved["ok-link-inside"] == ok_png
    assert resolved["ok-relative-into-media-root"] == str((world["extra"] / "x.png").resolve())
    assert resolved["ok-s3-root"] == f"{S3_ROOT}/a.png"


@pytest.mark.parametrize("there, missing", [("absolute", "absolute-missing"), ("dotdot", "dotdot-missing"),
                                            ("symlink-out", "symlink-dangling-out")])
def test_a_refusal_does_not_tell_whether_the_target_exists(world: dict[str, Path], there: str, missing: str) -> None:
    cases = [c for c in CASES if c[0] in (there, missing)]
    rows = read_manifest(str(write_manifest(world, cases))).to_pylist()
    details = [r["reject_detail"].split(": ", 1)[1].replace(ref, "REF")
               for r, (_, ref, _) in zip(rows, cases, strict=True)]
    assert details[0] == details[1] == f"media[0].uri (REF): {OUTSIDE}"


def test_features_path_is_held_to_the_same_roots(world: dict[str, Path]) -> None:
    record = {"id": "seg", "kind": "segment", "content": "<|audio_start|><|audio_pad|><|audio_end|>",
              "media": [{"modality": "audio", "uri": "media/a.wav", "features_path": "/etc/passwd"}],
              "source": "t", "license": "CC0-1.0", "start_us": 0, "duration_us": 1}
    manifest = world["world"] / "m.jsonl"
    manifest.write_text(json.dumps(record) + "\n")
    row = read_manifest(str(manifest)).to_pylist()[0]
    assert row["reject_code"] == MEDIA and f"media[0].features_path (/etc/passwd): {OUTSIDE}" in row["reject_detail"]
    assert row["media"][0]["uri"] == "media/a.wav"  # a refused row keeps its refs as written


def test_xmodal_check_rejects_at_ingest_and_never_reads_outside(world: dict[str, Path], tmp_path: Path) -> None:
    manifest = write_manifest(world, CASES)
    assert main(["check", str(manifest), "--out", str(tmp_path / "check")]) == 0
    results = {r["id"]: r for r in pq.read_table(tmp_path / "check" / "results.parquet").to_pylist()}
    for rid, _, refusal in CASES:
        if refusal is not None:
            assert (results[rid]["reject_stage"], results[rid]["reject_code"]) == ("ingest", MEDIA), rid
    # Without media_roots in the check, the extra root and the S3 prefix are outside too.
    for rid in ("ok-media-root", "ok-relative-into-media-root", "ok-s3-root"):
        assert (results[rid]["reject_stage"], results[rid]["reject_code"]) == ("ingest", MEDIA), rid
    assert results["ok-relative"]["reject_code"] != MEDIA


def test_s3_manifest_refs_resolve_under_its_prefix_only() -> None:
    policy = MediaPolicy.for_root("s3://bucket/world")
    assert policy.resolve("media/a.png") == "s3://bucket/world/media/a.png"
    assert policy.resolve("media/../b.png") == "s3://bucket/world/b.png"
    for ref in ("../other/a.png", "/etc/passwd", "s3://bucket/worldx/a.png", "s3://bucket/a.png"):
        with pytest.raises(MediaPathError, match=OUTSIDE):
            policy.resolve(ref)


def test_stages_hold_hand_built_rows_to_the_manifest_root(world: dict[str, Path]) -> None:
    """Rows that never went through ingest: a relative ref still resolves only under its row's
    ``manifest_root``, and nothing opens a media file through a symbolic link."""
    manifest = write_manifest(world, [("ok", "media/ok.png", None)])
    table = read_manifest(str(manifest))
    rows = table.to_pylist()
    rows[0]["media"][0]["uri"] = "media/link-out.png"  # as if ingest had not resolved it
    out = MediaCheck()(table.from_pylist(rows, schema=table.schema)).to_pylist()[0]
    assert out["reject_code"] == MEDIA and OUTSIDE in out["reject_detail"]
    with pytest.raises(MediaPathError, match="symbolic link"):
        with open_media(str(world["world"] / "media" / "link-inside.png"), 1 << 20):
            pass
    with pytest.raises(MediaPathError, match="not a regular file"):
        with open_media(str(world["world"] / "media"), 1 << 20):
            pass
