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

import base64
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_RETRYABLE_CODES = frozenset({
    "RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException",
    "RequestThrottled", "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
})
_READ_CHUNK = 8 * 2**20


def _not_found(err: PublishError) -> bool:
    """Whether a failed request failed because the key (or bucket) does not exist."""
    code = str(getattr(err.__cause__, "response", {}).get("Error", {}).get("Code"))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def _retryable(err: Any) -> bool:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in _RETRYABLE_CODES or status in _RETRYABLE_CODES


class PublishError(RuntimeError):
    """The upload cannot be done or did not finish; no manifest was written."""


class VersionExistsError(PublishError):
    """The target version already has a manifest and overwrite was not asked for."""


@dataclass(frozen=True)
class UploadSettings:
    multipart_threshold: int = 64 * 2**20
    part_size: int = 16 * 2**20
    attempts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass
class PublishStats:
    files_uploaded: int = 0
    files_skipped: int = 0  # the key already held the same bytes
    parts_uploaded: int = 0
    parts_reused: int = 0  # from an interrupted multipart upload
    bytes_uploaded: int = 0
    retries: int = 0
    stale_deleted: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LocalFile:
    rel: str
    path: Path
    size: int
    md5_etag: str  # the ETag S3 gives this file for its upload mode


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise PublishError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.strip("/")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the standard environment (``AWS_ENDPOINT_URL`` and credentials,
    unless ``endpoint_url`` is given), with botocore's retries off (``Publisher`` retries) and
    checksums only where required (some S3-compatible servers reject the newer default trailing
    checksums)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10,
                    read_timeout=120, request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    return boto3.client("s3", config=config, endpoint_url=endpoint_url)


def _read_parts(path: Path, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            yield chunk


def expected_etag(path: Path, size: int, settings: UploadSettings) -> str:
    """The ETag S3 computes: the MD5 of a single PUT, or ``md5(part md5s)-N`` for parts."""
    if size < settings.multipart_threshold:
        md5 = hashlib.md5()
        for chunk in _read_parts(path, _READ_CHUNK):
            md5.update(chunk)
        return md5.hexdigest()
    digests = [hashlib.md5(p).digest() for p in _read_parts(path, settings.part_size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


class Publisher:
    """One upload of one release directory; see the module docstring."""

    def __init__(self, client: Any, bucket: str, settings: UploadSettings,
                 progress: Callable[[str], None] | None = None) -> None:
        self.client, self.bucket, self.settings = client, bucket, settings
        self.progress = progress or (lambda line: log.info("%s", line))
        self.stats = PublishStats()

    # ---- requests with retries -------------------------------------------------------------
    def call(self, what: str, method: str, **kwargs: Any) -> Any:
        """One S3 request; transient failures are retried, any other failure (or the last
        transient one) raises PublishError with the botocore error as its cause."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        attempt = 0
        while True:
            attempt += 1
            try:
                return getattr(self.client, method)(**kwargs)
            except ClientError as err:
                if not _retryable(err) or attempt == self.settings.attempts:
                    raise PublishError(f"{what}: {err}") from err
                self._wait(what, attempt, err)
            except (BotoConnectionError, HTTPClientError) as err:
                if attempt == self.settings.attempts:
                    raise PublishError(f"{what}: failed after {attempt} attempts: {err}") from err
                self._wait(what, attempt, err)
            except BotoCoreError as err:
                raise PublishError(f"{what}: {err}") from err

    def _wait(self, what: str, attempt: int, err: Exception) -> None:
        delay = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: parallel publishers do not retry in step
        self.stats.retries += 1
        log.warning("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, err, delay)
        time.sleep(delay)

    def point_latest(self, key: str, version: str) -> None:
        """Point the dataset's ``latest`` at ``version``, unless that moves it back to an older
        dated version (``pipeline.release.versions.moves_latest``)."""
        from pipeline.release.versions import moves_latest

        body = self.get(key)
        current = None if body is None else body.decode("utf-8", "replace").strip()
        if not moves_latest(current, version):
            self.progress(f"latest stays on {current} ({version} is older)")
            return
        self.put(key, (version + "\n").encode(), "text/plain")
        self.progress(f"latest -> {version}")

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when there is no such key (or bucket)."""
        try:
            return dict(self.call(f"HEAD {key}", "head_object", Bucket=self.bucket, Key=key))
        except PublishError as err:
            if _not_found(err):
                return None
            raise

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key (or bucket)."""
        try:
            return bytes(self.call(f"GET {key}", "get_object", Bucket=self.bucket, Key=key)["Body"].read())
        except PublishError as err:
            if _not_found(err):
                return None
            raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        self.call(f"PUT {key}", "put_object", Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5,
                  ContentType=content_type,
                  Metadata={"sha256": hashlib.sha256(data).hexdigest()})
        self.stats.bytes_uploaded += len(data)

    # ---- files ----------------------------------------------------------------------------
    def upload_file(self, f: LocalFile, key: str) -> None:
        remote = self.head(key)
        if remote is not None and remote.get("ContentLength") == f.size \
                and str(remote.get("ETag", "")).strip('"') == f.md5_etag:
            self.stats.files_skipped += 1
            self.progress(f"skip {f.rel} (already uploaded)")
            return
        if f.size < self.settings.multipart_threshold:
            self.put(key, f.path.read_bytes(), _content_type(f.rel))
            self.progress(f"put {f.rel} ({f.size} bytes)")
        else:
            self.upload_multipart(f, key)
        self.stats.files_uploaded += 1

    def _resumable(self, f: LocalFile, key: str) -> tuple[str | None, dict[int, str]]:
        """An interrupted upload of ``key`` to continue, and its parts that match our bytes;
        older interrupted uploads of the same key are aborted."""
        pages = self.call(f"list uploads {key}", "list_multipart_uploads", Bucket=self.bucket, Prefix=key)
        uploads = [u for u in pages.get("Uploads", []) if u["Key"] == key]
        if not uploads:
            return None, {}
        uploads.sort(key=lambda u: u["Initiated"], reverse=True)
        for old in uploads[1:]:
            self.call(f"abort {key}", "abort_multipart_upload", Bucket=self.bucket, Key=key,
                      UploadId=old["UploadId"])
        upload_id = uploads[0]["UploadId"]
        listed: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = self.call(f"list parts {key}", "list_parts", Bucket=self.bucket, Key=key,
                             UploadId=upload_id, PartNumberMarker=marker)
            for p in page.get("Parts", []):
                listed[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]).strip('"'))
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        good: dict[int, str] = {}
        for number, chunk in enumerate(_read_parts(f.path, self.settings.part_size), start=1):
            size, etag = listed.get(number, (-1, ""))
            if size == len(chunk) and etag == hashlib.md5(chunk).hexdigest():
                good[number] = etag
        return upload_id, good

    def upload_multipart(self, f: LocalFile, key: str) -> None:
        total = -(-f.size // self.settings.part_size)
        upload_id, done = self._resumable(f, key)
        if upload_id is None:
            created = self.call(f"start {key}", "create_multipart_upload", Bucket=self.bucket,
                                Key=key, ContentType=_content_type(f.rel))
            upload_id = created["UploadId"]
            self.progress(f"multipart {f.rel}: {total} parts")
        else:
            self.progress(f"resume {f.rel}: {len(done)} of {total} parts already uploaded")
        parts = []
        for number, chunk in enumerate(_read_parts(f.path, self.settings.part_size), start=1):
            if number in done:
                self.stats.parts_reused += 1
                parts.append({"PartNumber": number, "ETag": f'"{done[number]}"'})
                continue
            md5 = hashlib.md5(chunk)
            answer = self.call(f"part {number} of {key}", "upload_part", Bucket=self.bucket, Key=key,
                               UploadId=upload_id, PartNumber=number, Body=chunk,
                               ContentMD5=base64.b64encode(md5.digest()).decode())
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self.stats.parts_uploaded += 1
            self.stats.bytes_uploaded += len(chunk)
            self.progress(f"part {number}/{total} {f.rel}")
        self.call(f"complete {key}", "complete_multipart_upload", Bucket=self.bucket, Key=key,
                  UploadId=upload_id, MultipartUpload={"Parts": parts})

    def keys_under(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.call(f"list {prefix}", "list_objects_v2", **kwargs)
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.call("delete stale keys", "delete_objects", Bucket=self.bucket,
                      Delete={"Objects": batch, "Quiet": True})
        self.stats.stale_deleted += len(keys)


def _content_type(rel: str) -> str:
    if rel.endswith(".html"):
        return "text/html; charset=utf-8"
    if rel.endswith((".json", ".jsonl")):
        return "application/json" if rel.endswith(".json") else "application/x-ndjson"
    return "application/octet-stream"


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
            for chunk in _read_parts(path, _READ_CHUNK):
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
