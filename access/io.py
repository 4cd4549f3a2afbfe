"""Filesystems and URIs: local paths, ``file://`` and ``s3://`` through pyarrow.

S3 settings come from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
and credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, else the AWS SDK's chain:
``AWS_SHARED_CREDENTIALS_FILE``/``AWS_PROFILE``, an instance role). Ray workers never get
credentials from the driver's runtime_env (Ray writes it to its logs): a local Ray's workers
inherit the driver's environment, a cluster's use their own (``pipeline.run.ray_runner``).

Media are opened with :func:`open_media`: a regular file only, never through a symbolic link at
its last component (the media policy, ``access.paths``, has resolved links already), its size
checked before a byte is read, and read as a stream.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse

import pyarrow.fs as pafs

from access.paths import MediaPathError, MediaPolicy

__all__ = ["MediaPathError", "MediaPolicy"]  # re-exported: stages catch it from here
CHUNK_BYTES = 1 << 20


@functools.lru_cache(maxsize=4)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if region:
        kwargs["region"] = region
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path inside it)`` for a local path, ``file://`` or ``s3://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        fs = _s3_filesystem(
            os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        )
        return fs, f"{parsed.netloc}{parsed.path}"
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # "C:" style drive letters count as local
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    raise MediaPathError(f"scheme {parsed.scheme!r} is not allowed (use a path, file:// or s3://)")


def parent_uri(uri: str) -> str:
    """Directory of a manifest: relative media URIs resolve against it."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return f"s3://{parsed.netloc}{posixpath.dirname(parsed.path)}"
    if parsed.scheme == "file":
        return os.path.dirname(parsed.path)
    return os.path.dirname(os.path.abspath(uri))


def resolve_media_uri(uri: str, root: str | None) -> str:
    """The URI a stage opens for a media ref.

    Ingest resolves every ref of a manifest through the run's :class:`MediaPolicy` (the
    manifest's folder plus ``media_roots``), so rows from ingest carry absolute refs, and so do
    the refs that stages write (augmented media); those are taken as given. A relative ref (a
    row built by hand) goes through the policy with ``root`` as its only root. Raises
    :class:`MediaPathError` for anything else.
    """
    if uri.startswith("s3://") or os.path.isabs(uri):
        return uri
    return MediaPolicy.for_root(root).resolve(uri)


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Read a whole object; raises ``FileNotFoundError`` or ``OSError`` on failure, and
    ``ValueError`` when the object is larger than ``max_bytes``."""
    fs, path = filesystem_for(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    if info.type != pafs.FileType.File:
        raise IsADirectoryError(uri)
    if max_bytes is not None and info.size is not None and info.size > max_bytes:
        raise ValueError(f"{uri} is {info.size} bytes, over the limit of {max_bytes}")
    with fs.open_input_stream(path) as stream:
        # A size that lies (a file still growing, /proc) never reads more than the limit.
        data: bytes = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{uri} is over the limit of {max_bytes} bytes")
    return data


@dataclass
class MediaFile:
    """An open media object: a seekable binary stream, its size, and its local path (None on
    S3) for decoders that only take paths (OpenCV's video reader)."""

    stream: BinaryIO
    size: int
    local_path: str | None

    def read_all(self) -> bytes:
        self.stream.seek(0)
        data: bytes = self.stream.read(self.size + 1)
        if len(data) > self.size:
            raise ValueError(f"{self.local_path or 'object'} grew while it was read")
        return data

    def sha256(self) -> str:
        """The stream's sha256, read in pieces (never the whole object in memory)."""
        self.stream.seek(0)
        digest, left = hashlib.sha256(), self.size
        while left > 0:
            piece = self.stream.read(min(CHUNK_BYTES, left))
            if not piece:
                break
            digest.update(piece)
            left -= len(piece)
        return digest.hexdigest()


@contextmanager
def open_media(uri: str, max_bytes: int) -> Iterator[MediaFile]:
    """Open a resolved media URI for reading (module docstring). Raises ``FileNotFoundError``,
    :class:`MediaPathError` (a symbolic link, not a regular file), ``ValueError`` when the
    object is larger than ``max_bytes`` (the message gives its size), ``OSError``."""
    fs, path = filesystem_for(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            # O_NONBLOCK: a FIFO put in place of a file must not hang the worker.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ELOOP:  # the last component is a symbolic link
                raise MediaPathError("is a symbolic link (changed after it was resolved)") from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            os.close(fd)
            if not stat.S_ISREG(info.st_mode):
                raise MediaPathError("is not a regular file")
            raise ValueError(f"is {info.st_size} bytes, over the limit of {max_bytes}")
        with os.fdopen(fd, "rb") as handle:
            yield MediaFile(handle, info.st_size, path)
        return
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    if info.type != pafs.FileType.File:
        raise MediaPathError("is not a regular file")
    size = int(info.size or 0)
    if size > max_bytes:
        raise ValueError(f"is {size} bytes, over the limit of {max_bytes}")
    with fs.open_input_file(path) as raw:
        # Buffered: each refill is one ranged GET of CHUNK_BYTES, not one per header read.
        yield MediaFile(io.BufferedReader(raw, buffer_size=CHUNK_BYTES), size, None)


@contextmanager
def local_copy(media: MediaFile, suffix: str) -> Iterator[str]:
    """A local path with the media's bytes: its own path, or a temp copy made in pieces."""
    if media.local_path is not None:
        yield media.local_path
        return
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        media.stream.seek(0)
        while piece := media.stream.read(CHUNK_BYTES):
            handle.write(piece)
        handle.flush()
        yield handle.name


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem_for(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)
