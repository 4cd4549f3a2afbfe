"""A lock per dataset version, so that two schedulers never build the same version at once.

- Local disk (or a shared POSIX mount): ``flock`` on ``<root>/<dataset>/.locks/<version>.lock``.
  The kernel drops it when the holder dies, however it dies, so it is never stale. The file is
  left in place: unlinking a lock file lets a waiter and a newcomer lock two different inodes.
- S3: a lease object at the same key, created with ``If-None-Match: *`` (only one writer can
  create it), renewed by a heartbeat thread with ``If-Match`` on its ETag, and deleted on release.
  A lease whose ``expires_at`` has passed (its holder died without releasing) is taken over with
  ``If-Match`` on the stale ETag, so that two takers cannot both win.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

LEASE_SECONDS = 600.0  # an S3 lease; renewed every third of it while the build runs


class LockHeld(RuntimeError):
    """Another process holds the lock; the message says who and since when."""


def lock_uri(root: str, dataset: str, version: str) -> str:
    return f"{root.rstrip('/')}/{dataset}/.locks/{version}.lock"


def _holder(owner: str, lease_s: float | None) -> dict[str, Any]:
    now = time.time()
    info: dict[str, Any] = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "acquired_at": now}
    if lease_s is not None:
        info["expires_at"] = now + lease_s
    return info


def _describe(info: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.get("acquired_at", 0)))
    return f"held by {info.get('host', '?')} pid {info.get('pid', '?')} since {since}"


@contextmanager
def _local_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                info = {}
            raise LockHeld(f"{path} is {_describe(info)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(uuid.uuid4().hex, None)).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _S3Lease:
    """The lease object and its heartbeat (module docstring)."""

    def __init__(self, uri: str, lease_s: float) -> None:
        import boto3

        parsed = urlparse(uri)
        self.bucket, self.key, self.lease_s = parsed.netloc, parsed.path.lstrip("/"), lease_s
        # boto3 reads AWS_ENDPOINT_URL and the credentials from the same environment as pyarrow.
        self.s3 = boto3.client("s3")
        self.owner = uuid.uuid4().hex
        self.etag = ""
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, **condition: str) -> None:
        body = json.dumps(_holder(self.owner, self.lease_s)).encode()
        self.etag = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]

    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._put(IfNoneMatch="*")
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            current = self.s3.get_object(Bucket=self.bucket, Key=self.key)
            info = json.loads(current["Body"].read() or b"{}")
            if info.get("expires_at", 0) > time.time():
                raise LockHeld(f"s3://{self.bucket}/{self.key} is {_describe(info)}") from None
            try:  # the holder died: take the stale lease over, unless someone else just did
                self._put(IfMatch=current["ETag"])
            except ClientError:
                taken = f"s3://{self.bucket}/{self.key}: a stale lease was just taken over by another process"
                raise LockHeld(taken) from None
        self._thread = threading.Thread(target=self._heartbeat, name="xmodal-lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        from botocore.exceptions import ClientError

        while not self._stop.wait(self.lease_s / 3):
            try:
                self._put(IfMatch=self.etag)
            except ClientError:
                self.lost.set()  # taken over after we missed renewals: stop pretending to hold it
                return

    def release(self) -> None:
        from botocore.exceptions import ClientError

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost.is_set():
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            except ClientError:
                pass  # already taken over; it is the new holder's now


@contextmanager
def version_lock(root: str, dataset: str, version: str, lease_s: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold the build lock of one dataset version; raises :class:`LockHeld` when another
    process holds it."""
    uri = lock_uri(root, dataset, version)
    if not uri.startswith("s3://"):
        from access.io import filesystem_for

        with _local_lock(filesystem_for(uri)[1]):
            yield
        return
    lease = _S3Lease(uri, lease_s)
    lease.acquire()
    try:
        yield
    finally:
        lease.release()
