"""Requests to S3 and S3-compatible servers, with one retry policy: the ``Publisher``.

Every request is retried with exponential backoff and jitter on connection errors, timeouts,
throttling and 5xx answers; botocore's own retries are off so that this is the one policy.
Objects go up in one PUT below the multipart threshold and in parts above it; a key that
already holds the same bytes (same size and ETag) is skipped, so a repeated upload resumes.
Used by ``publish`` (a local release directory) and ``s3_stream`` (a release streamed to S3).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

_RETRYABLE_CODES = frozenset({
    "RequestTimeout", "RequestTimeoutException", "SlowDown", "Throttling", "ThrottlingException",
    "RequestThrottled", "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
})
READ_CHUNK = 8 * 2**20


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


def read_parts(path: Path, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            yield chunk


def bytes_etag(data: bytes, settings: UploadSettings) -> str:
    """:func:`expected_etag` of bytes in memory."""
    if len(data) < settings.multipart_threshold:
        return hashlib.md5(data).hexdigest()
    size = settings.part_size
    digests = [hashlib.md5(data[i:i + size]).digest() for i in range(0, len(data), size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def expected_etag(path: Path, size: int, settings: UploadSettings) -> str:
    """The ETag S3 computes: the MD5 of a single PUT, or ``md5(part md5s)-N`` for parts."""
    if size < settings.multipart_threshold:
        md5 = hashlib.md5()
        for chunk in read_parts(path, READ_CHUNK):
            md5.update(chunk)
        return md5.hexdigest()
    digests = [hashlib.md5(p).digest() for p in read_parts(path, settings.part_size)]
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
    def _already_there(self, rel: str, key: str, size: int, etag: str) -> bool:
        """Whether ``key`` holds these bytes (same size and ETag); counted as a skipped file."""
        remote = self.head(key)
        if remote is None or remote.get("ContentLength") != size or str(remote.get("ETag", "")).strip('"') != etag:
            return False
        self.stats.files_skipped += 1
        self.progress(f"skip {rel} (already uploaded)")
        return True

    def upload_file(self, f: LocalFile, key: str) -> None:
        if self._already_there(f.rel, key, f.size, f.md5_etag):
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
        for number, chunk in enumerate(read_parts(f.path, self.settings.part_size), start=1):
            size, etag = listed.get(number, (-1, ""))
            if size == len(chunk) and etag == hashlib.md5(chunk).hexdigest():
                good[number] = etag
        return upload_id, good

    def upload_multipart(self, f: LocalFile, key: str) -> None:
        total = -(-f.size // self.settings.part_size)
        upload_id, done = self._resumable(f, key)
        if upload_id is not None:
            self.progress(f"resume {f.rel}: {len(done)} of {total} parts already uploaded")
        self._send_parts(f.rel, key, read_parts(f.path, self.settings.part_size), total, upload_id, done)

    def upload_bytes(self, rel: str, key: str, data: bytes) -> None:
        """``data`` to ``key`` (in parts from the multipart threshold); skipped when the key
        already holds these bytes, so that a repeated streamed release resumes."""
        if self._already_there(rel, key, len(data), bytes_etag(data, self.settings)):
            return
        if len(data) < self.settings.multipart_threshold:
            self.put(key, data, _content_type(rel))
        else:
            size = self.settings.part_size
            chunks = (data[i:i + size] for i in range(0, len(data), size))
            self._send_parts(rel, key, chunks, -(-len(data) // size), None, {})
        self.stats.files_uploaded += 1

    def _send_parts(self, rel: str, key: str, chunks: Iterator[bytes], total: int, upload_id: str | None,
                    done: dict[int, str]) -> None:
        """The parts of one object (those in ``done`` already went up with ``upload_id``), then
        the upload's completion."""
        if upload_id is None:
            created = self.call(f"start {key}", "create_multipart_upload", Bucket=self.bucket,
                                Key=key, ContentType=_content_type(rel))
            upload_id = created["UploadId"]
            self.progress(f"multipart {rel}: {total} parts")
        parts = []
        for number, chunk in enumerate(chunks, start=1):
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
            self.progress(f"part {number}/{total} {rel}")
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
