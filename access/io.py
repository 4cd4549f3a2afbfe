"""Filesystems and URIs: local paths, ``file://`` and ``s3://`` through pyarrow.

S3 settings come from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``); with Ray they must be set before
``ray.init()`` or in the job's ``runtime_env``.
"""

from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import urlparse

import pyarrow.fs as pafs

ALLOWED_SCHEMES = ("", "file", "s3")


class MediaPathError(ValueError):
    """A media URI that must not be read: bad scheme, or a relative path escaping its root."""


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
    """Resolve a media ref's ``uri`` against the manifest root.

    Absolute paths, ``file://`` and ``s3://`` URIs are taken as given; a relative path is joined
    to ``root`` and must stay inside it. Raises :class:`MediaPathError` otherwise.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ALLOWED_SCHEMES and len(parsed.scheme) != 1:
        raise MediaPathError(f"uri scheme {parsed.scheme!r} is not allowed")
    if parsed.scheme in ("file", "s3") or os.path.isabs(uri):
        return uri
    if root is None:
        raise MediaPathError("relative uri without a manifest root")
    normalized = posixpath.normpath(uri)
    if normalized == ".." or normalized.startswith("../") or normalized.startswith("/"):
        raise MediaPathError("uri escapes the manifest root")
    if root.startswith("s3://"):
        return f"{root.rstrip('/')}/{normalized}"
    return os.path.join(root, normalized)


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
        data: bytes = stream.read()
    return data


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem_for(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)
