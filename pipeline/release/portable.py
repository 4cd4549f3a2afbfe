"""Media of a release that travel with it: referenced relative to the release, copied into
``media/``, or embedded as bytes.

The shards used to hold absolute paths on the build machine and the release held no media: a
copied release had no images. The shard writer calls, on each block of kept rows before it is
sliced into shards (``mode`` from the config's ``release.media``):

    block = portable_media(block, mode, release_uri, put=publisher.put)

- ``relative`` (default): each uri is written relative to the release folder (``../../media/x.png``
  when the media lie beside it; ``s3://`` URIs stay as they are). A release moved together with
  its media keeps them; one copied alone does not.
- ``copy``: each file is copied once to ``media/<aa>/<sha256><ext>`` inside the release (content
  addressed: the same file referenced twice is stored once, and the same inputs give the same
  paths) through ``put(relative_path, bytes)``, the writer's own upload, and the uri becomes that
  path. The release is portable; its ``manifest.json`` should list these files as it lists shards.
- ``embed``: the bytes go into a ``media_bytes`` column (``list<binary>``, in the order of
  ``media``) and the uri becomes the file's name: one file per release holds everything.

A ref that cannot be read (it passed ``media_check``, so this means the file went away during
the build) raises :class:`PortableMediaError` naming the row and the ref.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa

from access.io import read_bytes

MediaMode = Literal["relative", "copy", "embed"]
MEDIA_DIR = "media"


class PortableMediaError(RuntimeError):
    """A kept row's media could not be read while the release was written."""


def relative_uri(uri: str, release_uri: str) -> str:
    """``uri`` relative to the release folder (URIs with a scheme are left as they are)."""
    if "://" in uri or "://" in release_uri:
        return uri
    return posixpath.relpath(os.path.abspath(uri), os.path.abspath(release_uri))


def copied_path(data: bytes, uri: str, sha256: str | None = None) -> str:
    """Where ``copy`` stores a media file: ``media/<aa>/<sha256><ext>``."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    ext = os.path.splitext(uri.split("?")[0])[1].lower()
    return f"{MEDIA_DIR}/{digest[:2]}/{digest}{ext}"


def portable_media(block: pa.Table, mode: MediaMode, release_uri: str,
                   put: Callable[[str, bytes], Any] | None = None) -> pa.Table:
    """``block`` with its media refs made portable (module docstring)."""
    if mode not in ("relative", "copy", "embed"):
        raise ValueError(f"release media mode {mode!r} is not relative, copy or embed")
    if mode == "copy" and put is None:
        raise ValueError("media mode 'copy' needs put(path, bytes)")
    ids = block["id"].to_pylist()
    media = block["media"].to_pylist()
    written: set[str] = set()
    new_media: list[list[dict[str, Any]] | None] = []
    blobs: list[list[bytes] | None] = []
    for rid, refs in zip(ids, media, strict=True):
        if refs is None:
            new_media.append(None)
            blobs.append(None)
            continue
        out_refs, out_blobs = [], []
        for k, ref in enumerate(refs):
            ref = dict(ref)
            uri = ref["uri"]
            if mode == "relative":
                ref["uri"] = relative_uri(uri, release_uri)
            else:
                try:
                    data = read_bytes(uri)
                except OSError as err:
                    raise PortableMediaError(f"{rid}: media[{k}] {uri}: {err}") from None
                if mode == "copy":
                    path = copied_path(data, uri, ref.get("sha256"))
                    if path not in written:
                        put(path, data)  # type: ignore[misc]
                        written.add(path)
                    ref["uri"] = path
                else:
                    ref["uri"] = posixpath.basename(uri.split("?")[0])
                    out_blobs.append(data)
            out_refs.append(ref)
        new_media.append(out_refs)
        blobs.append(out_blobs if mode == "embed" else None)
    i = block.schema.get_field_index("media")
    block = block.set_column(i, block.schema.field(i), pa.array(new_media, block.schema.field(i).type))
    if mode == "embed":
        block = block.append_column(pa.field("media_bytes", pa.list_(pa.binary())),
                                    pa.array(blobs, pa.list_(pa.binary())))
    return block
