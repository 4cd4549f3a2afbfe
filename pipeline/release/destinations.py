"""Where a release version is written: a local directory or an S3 prefix, committed by its manifest.

Both take each file as it is written (``put``), then ``commit`` the manifest last, the commit
marker, and move the dataset's ``latest`` pointer (never back to an older dated version);
``abort`` after a failure.

- :class:`LocalDestination` builds the version in a hidden sibling directory and renames it
  into place, so a reader never sees half a release.
- :class:`S3Destination` uploads each file under the version's prefix as soon as it is written
  (no local copy): shards first, the manifest after them. Until the manifest is there the
  version is not a release; with ``overwrite`` the old manifest is deleted before any file
  changes. A failed release leaves its uploaded files and no manifest; the next release of the
  same version skips every file whose key already holds the same bytes (shards are
  deterministic), deletes what no longer belongs to it, and commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable

from access.io import filesystem_for
from pipeline.release.s3 import Publisher, UploadSettings, s3_client, split_s3_uri
from pipeline.release.versions import LATEST, moves_latest, read_latest

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class ReleaseError(RuntimeError):
    """The release cannot be published (exists, lint failed, counts do not reconcile)."""


class LocalDestination:
    """A version built in a hidden sibling directory and renamed into place at commit."""

    def __init__(self, root: str, dataset: str, version: str, overwrite: bool) -> None:
        _, self.final_path = filesystem_for(f"{root.rstrip('/')}/{dataset}/{version}")  # path or file://
        self.dataset_path = os.path.dirname(self.final_path)
        if os.path.isfile(os.path.join(self.final_path, "manifest.json")) and not overwrite:
            raise ReleaseError(f"{self.final_path} already exists (set release.overwrite to replace it)")
        self.work_path = f"{self.dataset_path}/.{version}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(self.work_path)

    def put(self, rel: str, data: bytes | Iterable[bytes]) -> tuple[int, str]:
        """Write ``data`` (bytes, or pieces of it) to ``rel``; returns its size and sha256."""
        path = os.path.join(self.work_path, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(path, "wb") as out:
            for piece in [data] if isinstance(data, bytes) else data:
                out.write(piece)
                digest.update(piece)
                size += len(piece)
        return size, digest.hexdigest()

    def commit(self, manifest: bytes, version: str) -> None:
        self.put("manifest.json", manifest)  # last: the commit marker
        if os.path.exists(self.final_path):
            trash = f"{self.dataset_path}/.{version}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final_path, trash)
            os.rename(self.work_path, self.final_path)
            shutil.rmtree(trash)
        else:
            os.rename(self.work_path, self.final_path)
        current = read_latest(self.dataset_path)
        if not moves_latest(current, version):
            log.info("latest stays on %s: %s is an older dated version", current, version)
            return
        tmp_latest = f"{self.dataset_path}/.latest.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp_latest, "w") as fh:
            fh.write(version + "\n")
        os.replace(tmp_latest, f"{self.dataset_path}/{LATEST}")

    def abort(self) -> None:
        if os.path.isdir(self.work_path):
            shutil.rmtree(self.work_path, ignore_errors=True)


class S3Destination:
    """A version written straight to ``s3://bucket/prefix/<dataset>/<version>``; see the module."""

    def __init__(self, root: str, dataset: str, version: str, overwrite: bool,
                 settings: UploadSettings | None = None, client: object = None) -> None:
        self.final_path = f"{root.rstrip('/')}/{dataset}/{version}"
        bucket, self.prefix = split_s3_uri(self.final_path)
        self.pub = Publisher(client or s3_client(), bucket, settings or UploadSettings())
        self.manifest_key = f"{self.prefix}/{MANIFEST}"
        self.written: set[str] = set()
        if self.pub.head(self.manifest_key) is not None:
            if not overwrite:
                raise ReleaseError(f"{self.final_path} already exists (set release.overwrite to replace it)")
            self.pub.call(f"DELETE {self.manifest_key}", "delete_object", Bucket=bucket, Key=self.manifest_key)
            log.info("uncommitted %s: old manifest deleted before replacing the files", self.final_path)

    def put(self, rel: str, data: bytes | Iterable[bytes]) -> tuple[int, str]:
        """Upload ``data`` (one file: a shard's encoding is held once, here) to ``rel``; returns
        its size and sha256."""
        blob = data if isinstance(data, bytes) else b"".join(data)
        key = f"{self.prefix}/{rel}"
        self.pub.upload_bytes(rel, key, blob)
        self.written.add(key)
        return len(blob), hashlib.sha256(blob).hexdigest()

    def commit(self, manifest: bytes, version: str) -> None:
        stale = [k for k in self.pub.keys_under(self.prefix + "/") if k not in self.written]
        if stale:
            self.pub.delete(stale)
            log.info("deleted %d stale key(s) of an earlier build of %s", len(stale), self.final_path)
        self.pub.put(self.manifest_key, manifest, "application/json")
        self.pub.point_latest(f"{self.prefix.rsplit('/', 1)[0]}/{LATEST}", version)
        bucket = self.pub.bucket
        leftovers = self.pub.call("list uploads", "list_multipart_uploads", Bucket=bucket, Prefix=self.prefix + "/")
        for u in leftovers.get("Uploads", []):  # orphans of interrupted parts cost storage
            self.pub.call(f"abort {u['Key']}", "abort_multipart_upload", Bucket=bucket, Key=u["Key"],
                          UploadId=u["UploadId"])

    def abort(self) -> None:
        """Nothing to undo: without its manifest the version is not a release, and the files
        already up are what the next release of it skips."""
