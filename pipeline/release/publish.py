"""Publish a finished local release directory to ``s3://bucket/prefix/<dataset>/<version>``.

Order (DESIGN.md): every shard, reject file and the report first, ``manifest.json`` after them
(the commit marker), then the dataset's ``latest`` pointer. The upload is resumable:

- a file whose key already holds the same bytes (same size and ETag: the MD5, or the multipart
  ETag for the configured part size) is skipped;
- a large file goes up in parts; an interrupted multipart upload of the same key is resumed,
  reusing each part whose size and MD5 match the local bytes and uploading the others;
- a version that already has a manifest is never replaced unless ``overwrite``; with it, the old
  manifest is deleted first, so that the version is uncommitted while its files change.

Every request is retried with exponential backoff and jitter on connection errors, timeouts,
throttling and 5xx answers; botocore's own retries are off so that this is the one policy.
A failed upload leaves no manifest: run the same publish again to finish it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.release.s3 import (
    READ_CHUNK,
    LocalFile,
    Publisher,
    PublishError,
    PublishStats,
    UploadSettings,
    VersionExistsError,
    expected_etag,
    read_parts,
    s3_client,
    split_s3_uri,
)

__all__ = ["PublishError", "PublishStats", "UploadSettings", "VersionExistsError", "publish_directory",
           "s3_client", "split_s3_uri"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def local_files(local_dir: Path, settings: UploadSettings) -> list[LocalFile]:
    """Every file of the release except the manifest, checked against the manifest's sha256."""
    manifest = json.loads((local_dir / MANIFEST).read_text())
    listed = {s["path"]: s["sha256"] for s in manifest.get("shards", [])}
    if manifest.get("report"):
        listed[manifest["report"]["path"]] = manifest["report"]["sha256"]
    files = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        if rel == MANIFEST:
            continue
        if rel in listed:
            sha = hashlib.sha256()
            for chunk in read_parts(path, READ_CHUNK):
                sha.update(chunk)
            if sha.hexdigest() != listed[rel]:
                raise PublishError(f"{path}: sha256 differs from the manifest; rebuild the release")
        size = path.stat().st_size
        files.append(LocalFile(rel, path, size, expected_etag(path, size, settings)))
    missing = sorted(set(listed) - {f.rel for f in files})
    if missing:
        raise PublishError(f"{local_dir}: {len(missing)} file(s) of the manifest are missing, first: {missing[0]}")
    return files


def publish_directory(local_dir: str | Path, uri: str, *, overwrite: bool = False,
                      settings: UploadSettings | None = None, client: Any = None,
                      progress: Callable[[str], None] | None = None) -> PublishStats:
    """Upload ``local_dir`` (a complete release: it has its manifest) to ``uri``
    (``s3://bucket/prefix/<dataset>/<version>``); see the module docstring."""
    from pipeline.release.versions import LATEST

    t0 = time.perf_counter()
    local_dir = Path(local_dir)
    if not (local_dir / MANIFEST).is_file():
        raise PublishError(f"{local_dir} has no {MANIFEST}: not a finished release")
    settings = settings or UploadSettings()
    bucket, prefix = split_s3_uri(uri)
    if not prefix or "/" not in prefix:
        raise PublishError(f"{uri}: expected s3://bucket/[prefix/]<dataset>/<version>")
    pub = Publisher(client or s3_client(), bucket, settings, progress)
    manifest = (local_dir / MANIFEST).read_bytes()
    version = prefix.rsplit("/", 1)[1]
    latest_key = f"{prefix.rsplit('/', 1)[0]}/{LATEST}"
    manifest_key = f"{prefix}/{MANIFEST}"
    body = pub.get(manifest_key)
    if body is not None:
        if body == manifest:
            pub.progress(f"{uri} is already published with this manifest")
            pub.point_latest(latest_key, version)
            pub.stats.seconds = time.perf_counter() - t0
            return pub.stats
        if not overwrite:
            raise VersionExistsError(f"{uri} already exists (set release.overwrite to replace it)")
        pub.call(f"DELETE {manifest_key}", "delete_object", Bucket=bucket, Key=manifest_key)
        pub.progress(f"uncommitted {uri}: old manifest deleted before replacing the files")
    files = local_files(local_dir, settings)
    for f in files:
        pub.upload_file(f, f"{prefix}/{f.rel}")
    wanted = {f"{prefix}/{f.rel}" for f in files} | {manifest_key}
    stale = [k for k in pub.keys_under(prefix + "/") if k not in wanted]
    if stale:
        pub.delete(stale)
        pub.progress(f"deleted {len(stale)} stale key(s) of an earlier build")
    pub.put(manifest_key, manifest, "application/json")
    pub.progress(f"manifest {manifest_key}")
    pub.point_latest(latest_key, version)
    leftovers = pub.call("list uploads", "list_multipart_uploads", Bucket=bucket, Prefix=prefix + "/")
    for u in leftovers.get("Uploads", []):  # orphans of earlier attempts cost storage
        pub.call(f"abort {u['Key']}", "abort_multipart_upload", Bucket=bucket, Key=u["Key"],
                 UploadId=u["UploadId"])
    pub.stats.seconds = time.perf_counter() - t0
    return pub.stats


# ---- command line -------------------------------------------------------------------------
def _add_arguments(p: Any) -> None:
    p.add_argument("directory", help="a finished local release: <root>/<dataset>/<version>")
    p.add_argument("uri", help="s3://bucket/[prefix/]<dataset>/<version>")
    p.add_argument("--overwrite", action="store_true", help="replace a version that has a manifest")
    p.add_argument("--threshold-mb", type=int, default=64, help="multipart from this size (default 64)")
    p.add_argument("--part-mb", type=int, default=16, help="part size, at least 5 (default 16)")
    p.add_argument("--attempts", type=int, default=5, help="tries per request (default 5)")


def cmd_publish(args: Any) -> int:
    if args.part_mb < 5:
        raise PublishError("--part-mb must be at least 5 (the S3 minimum part size)")
    settings = UploadSettings(multipart_threshold=args.threshold_mb * 2**20,
                              part_size=args.part_mb * 2**20, attempts=args.attempts)
    stats = publish_directory(args.directory, args.uri, overwrite=args.overwrite, settings=settings,
                              progress=lambda line: print(line, flush=True))
    print(json.dumps(stats.to_json()), flush=True)
    return 0


def register_cli(add: Callable[..., Any]) -> None:
    """``xmodal publish``: upload (or finish uploading) a built release to S3."""
    def run(args: Any) -> int:
        from pipeline.errors import UserError

        try:
            return cmd_publish(args)
        except PublishError as err:
            raise UserError(str(err)) from None

    p = add("publish", "upload a built release directory to S3 (resumes an interrupted upload)", run,
            "xmodal publish /tmp/xmodal-build/ds/v1 s3://bucket/releases/ds/v1")
    _add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.release.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("XMODAL_LOG", "WARNING"))
    try:
        return cmd_publish(args)
    except PublishError as err:
        print(f"publish: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
