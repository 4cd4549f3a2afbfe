"""Media access policy: a media ref resolves only under the allowed roots.

The roots are the manifest's folder plus the run's ``media_roots`` (local folders and
``s3://bucket/prefix`` prefixes). :meth:`MediaPolicy.resolve` turns a ref as written in a record
into the URI that may be opened, or raises :class:`MediaPathError`, before anything is opened:

- a relative path joins the manifest's folder; an absolute path is taken as written; either
  must, once every symbolic link in it is followed (``os.path.realpath``, which reads links and
  never opens the target), lie inside a local root; the resolved path is what is returned, so a
  link inside the folder that points inside the roots is read through its target;
- ``s3://bucket/key`` (or a relative ref under an ``s3://`` manifest) must, with its ``.`` and
  ``..`` segments collapsed, lie under an ``s3://`` root: same bucket, key under the prefix;
- ``file:`` URIs (``file:///etc/passwd``, ``file:../x``), other schemes (``http:``, ``C:``),
  percent-encoded dots, slashes, backslashes or NUL (``%2e%2e/``) and control characters are
  refused outright.

A refusal's message says which rule the ref broke and never whether its target exists: the
same ref gets the same message whether or not there is a file behind it.

Imports neither ``pipeline`` nor Ray.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# %2e '.', %2f '/', %5c '\', %00 NUL: only ever spelled this way to slip past a path check.
_ENCODED_PATH_CHARS = re.compile(r"%(?:2e|2f|5c|00)", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
OUTSIDE = "resolves outside the allowed media roots"


class MediaPathError(ValueError):
    """A media ref that must not be opened (the row gets ``ERR_CROSS_MDL_MEDIA``)."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _s3_parts(uri: str) -> tuple[str, str]:
    parsed = urlsplit(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def normalize_root(root: str) -> str:
    """A root as the policy compares it: ``s3://bucket/prefix`` without a trailing slash, or
    the real absolute path of a local folder (relative to the current directory)."""
    if root.startswith("s3://"):
        bucket, key = _s3_parts(root)
        if not bucket or any(seg in (".", "..") for seg in key.split("/")):
            raise MediaPathError(f"media root {root!r} is not s3://bucket[/prefix]")
        return f"s3://{bucket}/{key.strip('/')}".rstrip("/")
    if "://" in root or root.startswith("file:"):
        raise MediaPathError(f"media root {root!r}: use a local folder or an s3:// prefix")
    return os.path.realpath(os.path.abspath(root))


@dataclass(frozen=True)
class MediaPolicy:
    """Where relative refs resolve (``base``) and where any ref may point (``roots``)."""

    base: str | None
    roots: tuple[str, ...]

    @classmethod
    def for_root(cls, base: str | None, media_roots: Iterable[str] = ()) -> MediaPolicy:
        """``base`` (the manifest's folder: a path or ``s3://`` prefix) is itself a root."""
        roots = [normalize_root(r) for r in ([base] if base else []) + list(media_roots)]
        if base and not base.startswith("s3://"):
            base = os.path.abspath(base)
        return cls(base, tuple(dict.fromkeys(roots)))

    def resolve(self, ref: str) -> str:
        """The URI ``ref`` may be opened as; raises :class:`MediaPathError` (module docstring)."""
        if _CONTROL_CHARS.search(ref):
            raise MediaPathError("contains a control character")
        if _ENCODED_PATH_CHARS.search(ref):
            raise MediaPathError("percent-encoded '.', '/', '\\' or NUL are not accepted")
        scheme = urlsplit(ref).scheme.lower() if ":" in ref else ""
        if scheme == "file":
            raise MediaPathError("file: URIs are not accepted (use a path relative to the manifest, "
                                 "or one under media_roots)")
        if scheme == "s3":
            return self._resolve_s3(ref)
        if scheme:
            raise MediaPathError(f"scheme {scheme!r} is not allowed (a path or s3:// only)")
        if os.path.isabs(ref):
            return self._resolve_local(ref)
        if self.base is None:
            raise MediaPathError("relative uri without a manifest root")
        if self.base.startswith("s3://"):
            return self._resolve_s3(f"{self.base.rstrip('/')}/{ref}")
        return self._resolve_local(os.path.join(self.base, ref))

    def _resolve_local(self, path: str) -> str:
        real = os.path.realpath(path)
        if not any(_inside(real, root) for root in self.roots if not root.startswith("s3://")):
            raise MediaPathError(OUTSIDE)
        return real

    def _resolve_s3(self, uri: str) -> str:
        bucket, key = _s3_parts(uri)
        segments = key.split("/")
        if ".." in segments or "." in segments:
            key = posixpath.normpath(key)
            if key.startswith("..") or key == ".":
                raise MediaPathError(OUTSIDE)
        resolved = f"s3://{bucket}/{key}"
        if not any(_inside(resolved, root) for root in self.roots if root.startswith("s3://")):
            raise MediaPathError(OUTSIDE)
        return resolved
