"""Media of a release that travel with it: referenced relative to the release, copied into
``media/``, or embedded as bytes (the config's ``release.media``).

The shard writer (``pipeline.release.stream``) calls, on each data or negatives shard before
it is encoded:

    shard = portable_media(shard, mode, release_uri, put=destination.put, written=files)

- ``relative``: each uri is written relative to the release folder (``../../media/x.png``
  when the media lie beside it); ``s3://`` URIs, and every URI of a release written to S3, stay
  as they are. A release moved together with its media keeps them; one copied alone does not.
- ``copy`` (default): each file is copied once to ``media/<aa>/<sha256><ext>`` inside the release (content
  addressed by the bytes read: the same file referenced twice is stored once, and the same
  inputs give the same paths and shard bytes) through ``put(relative_path, bytes)``, the
  destination's own upload, and the uri becomes that path. ``written`` collects
  ``{path: {"path", "bytes", "sha256"}}``, which the manifest lists as ``media_files``. The
  release is portable, and its shards' bytes do not depend on where it is written (``relative``
  refs do: the same build written to another root gives other bytes).
- ``embed``: the bytes go into a ``media_bytes`` column (``list<binary>``, in the order of
  ``media``) and the uri becomes the file's name: the shards hold everything.

A negative pair's ``negative_media`` (the edited image's uri) is made portable the same way,
embedded into ``negative_media_bytes``. Rejects are not passed through here: they keep the URIs
the build read (with ``manifest_root``), for debugging on the build machine.

Readers open a ref with :func:`resolve_media_uri` (``release_uri`` the folder they opened), or
take its bytes from ``media_bytes``; :func:`resolve_media_column` does it for a whole table. A
ref that cannot be read (it passed ``media_check``, so this means the file went away during the
build) raises :class:`PortableMediaError` naming the row and the ref.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from access.io import read_bytes

MediaMode = Literal["relative", "copy", "embed"]
MEDIA_MODES: tuple[str, ...] = ("relative", "copy", "embed")
MEDIA_DIR = "media"
BYTES_COLUMN = "media_bytes"
NEGATIVE_COLUMN = "negative_media"
NEGATIVE_BYTES_COLUMN = "negative_media_bytes"


class PortableMediaError(RuntimeError):
    """A kept row's media could not be read while the release was written."""


def relative_uri(uri: str, release_uri: str) -> str:
    """``uri`` relative to the release folder (URIs with a scheme are left as they are)."""
    if "://" in uri or "://" in release_uri:
        return uri
    return posixpath.relpath(os.path.abspath(uri), os.path.abspath(release_uri))


def resolve_media_uri(release_uri: str, uri: str) -> str:
    """The URI to open for a media ref of the release at ``release_uri`` (the folder a reader
    opened, wherever the release now is): a URI with a scheme or an absolute path as it is, a
    relative one (``media/...`` of a copied release, ``../..`` of a relative one) joined to the
    release folder."""
    if not uri or "://" in uri or os.path.isabs(uri):
        return uri
    scheme, sep, rest = release_uri.rstrip("/").partition("://")
    if sep:
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, uri))}"
    return os.path.normpath(os.path.join(os.path.abspath(release_uri), uri))


def resolve_media_column(table: pa.Table, release_uri: str) -> pa.Table:
    """``table`` with every ``media`` uri (and ``negative_media``) resolved against the release."""
    for name in ("media", NEGATIVE_COLUMN):
        if name not in table.column_names:
            continue
        i = table.schema.get_field_index(name)
        f = table.schema.field(i)
        values = table[name].to_pylist()
        if name == "media":
            values = [None if refs is None else [None if r is None else {**r, "uri": resolve_media_uri(
                release_uri, r["uri"]) if r.get("uri") else r.get("uri")} for r in refs] for refs in values]
        else:
            values = [None if u is None else resolve_media_uri(release_uri, u) for u in values]
        table = table.set_column(i, f, pa.array(values, f.type))
    return table


def copied_path(data: bytes, uri: str, sha256: str | None = None) -> str:
    """Where ``copy`` stores a media file: ``media/<aa>/<sha256><ext>``."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    ext = os.path.splitext(uri.split("?")[0])[1].lower()
    return f"{MEDIA_DIR}/{digest[:2]}/{digest}{ext}"


class _Porter:
    """One table's refs made portable; see :func:`portable_media`."""

    def __init__(self, mode: str, release_uri: str, put: Callable[[str, bytes], Any] | None,
                 written: MutableMapping[str, dict[str, Any]], source_root: str | None,
                 copied: MutableMapping[str, str] | None = None) -> None:
        self.mode, self.release_uri, self.put = mode, release_uri, put
        self.written, self.source_root = written, source_root
        self.copied = {} if copied is None else copied  # source uri -> its copy: read and hashed once

    def read(self, rid: Any, what: str, uri: str, embedded: bytes | None) -> bytes:
        if embedded is not None:
            return embedded
        try:
            return read_bytes(self.source(uri))
        except OSError as err:
            raise PortableMediaError(f"{rid}: {what} {uri}: {err}") from None

    def source(self, uri: str) -> str:
        return resolve_media_uri(self.source_root, uri) if self.source_root else uri

    def ref_uri(self, rid: Any, what: str, uri: str, embedded: bytes | None) -> tuple[str, bytes | None]:
        """The uri the release writes for ``uri``, and its bytes when they are embedded."""
        if self.mode == "relative":
            if embedded is not None:  # a release with embedded media has no file to point at
                return self._copy(uri, embedded), None
            return relative_uri(self.source(uri), self.release_uri), None
        if self.mode == "copy" and embedded is None and uri in self.copied:
            return self.copied[uri], None
        data = self.read(rid, what, uri, embedded)
        if self.mode == "copy":
            path = self._copy(uri, data)
            if embedded is None:
                self.copied[uri] = path
            return path, None
        return posixpath.basename(uri.split("?")[0]), data

    def _copy(self, uri: str, data: bytes) -> str:
        if self.put is None:
            raise ValueError("media mode 'copy' needs put(path, bytes)")
        digest = hashlib.sha256(data).hexdigest()
        path = copied_path(data, uri, digest)
        if path not in self.written:
            self.put(path, data)
            self.written[path] = {"path": path, "bytes": len(data), "sha256": digest}
        return path


def _replace(block: pa.Table, name: str, values: list[Any], type_: pa.DataType | None = None) -> pa.Table:
    if name in block.column_names:
        i = block.schema.get_field_index(name)
        f = block.schema.field(i)
        return block.set_column(i, f, pa.array(values, f.type))
    assert type_ is not None
    return block.append_column(pa.field(name, type_), pa.array(values, type_))


def _mapped(porter: _Porter, uris: pa.Array, where: Callable[[int], tuple[Any, str]]) -> pa.Array:
    """``uris`` made portable, each distinct one once (in order of first use, as a row-by-row
    pass would copy them); ``where(i)``: the row id and ref name of ``uris[i]``, for the error."""
    uniq = pc.unique(uris).drop_null()
    out = []
    for u in uniq.to_pylist():
        try:
            out.append(porter.ref_uri(None, "", u, None)[0])
        except PortableMediaError:
            first = int(pc.index(uris, u).as_py())
            porter.ref_uri(*where(first), u, None)  # raises, naming the row and the ref
            raise
    return pc.take(pa.array(out, uris.type), pc.index_in(uris, value_set=uniq))


def _fast_media(block: pa.Table, porter: _Porter) -> pa.Table:
    """``portable_media`` of a block without embedded bytes in ``relative`` or ``copy`` mode:
    the refs' uris rewritten column-wise, the rest of each ref as it was."""
    i = block.schema.get_field_index("media")
    f = block.schema.field(i)
    arr = block["media"].combine_chunks()
    flat = arr.flatten()
    if len(flat) == 0 or "uri" not in [x.name for x in flat.type]:
        return block
    ids = block["id"].combine_chunks()
    starts = pc.subtract(arr.offsets, arr.offsets[0])
    parents = pc.list_parent_indices(arr)

    def where(pos: int) -> tuple[Any, str]:
        row = int(parents[pos].as_py())
        return ids[row].as_py(), f"media[{pos - int(starts[row].as_py())}]"

    uris = _mapped(porter, pc.struct_field(flat, "uri"), where)
    children = [uris if x.name == "uri" else pc.struct_field(flat, [j]) for j, x in enumerate(flat.type)]
    struct = pa.StructArray.from_arrays(children, fields=list(flat.type),
                                        mask=pc.is_null(flat) if flat.null_count else None)
    media = pa.ListArray.from_arrays(starts, struct, type=f.type, mask=pc.is_null(arr) if arr.null_count else None)
    return block.set_column(i, f, media)


def _fast_negatives(block: pa.Table, porter: _Porter) -> pa.Table:
    i = block.schema.get_field_index(NEGATIVE_COLUMN)
    ids = block["id"].combine_chunks()
    uris = _mapped(porter, block[NEGATIVE_COLUMN].combine_chunks(), lambda pos: (ids[pos].as_py(), NEGATIVE_COLUMN))
    return block.set_column(i, block.schema.field(i), uris)


def portable_media(block: pa.Table, mode: MediaMode | str, release_uri: str,
                   put: Callable[[str, bytes], Any] | None = None,
                   written: MutableMapping[str, dict[str, Any]] | None = None,
                   source_root: str | None = None, copied: MutableMapping[str, str] | None = None) -> pa.Table:
    """``block`` with its media refs made portable (module docstring). ``source_root``: the
    release the refs come from when they are relative to it (an export of a release); bytes
    already in ``media_bytes`` are used, not read again. ``copied``: the copies made so far, by
    source uri, kept by the caller across blocks so that a file many rows share is read once."""
    if mode not in MEDIA_MODES:
        raise ValueError(f"release media mode {mode!r} is not relative, copy or embed")
    if mode == "copy" and put is None:
        raise ValueError("media mode 'copy' needs put(path, bytes)")
    porter = _Porter(mode, release_uri, put, {} if written is None else written, source_root, copied)
    if mode != "embed" and not any(c in block.column_names for c in (BYTES_COLUMN, NEGATIVE_BYTES_COLUMN)):
        if "media" in block.column_names:
            block = _fast_media(block, porter)
        if NEGATIVE_COLUMN in block.column_names:
            block = _fast_negatives(block, porter)
        return block
    if "media" in block.column_names:
        ids = block["id"].to_pylist()
        media = block["media"].to_pylist()
        given = block[BYTES_COLUMN].to_pylist() if BYTES_COLUMN in block.column_names else [None] * len(ids)
        new_media: list[list[dict[str, Any]] | None] = []
        blobs: list[list[bytes] | None] = []
        for rid, refs, have in zip(ids, media, given, strict=True):
            if refs is None:
                new_media.append(None)
                blobs.append(None)
                continue
            out_refs, out_blobs = [], []
            for k, ref in enumerate(refs):
                ref = dict(ref)
                embedded = bytes(have[k]) if have and k < len(have) and have[k] is not None else None
                ref["uri"], data = porter.ref_uri(rid, f"media[{k}]", ref["uri"], embedded)
                if data is not None:
                    out_blobs.append(data)
                out_refs.append(ref)
            new_media.append(out_refs)
            blobs.append(out_blobs if mode == "embed" else None)
        block = _replace(block, "media", new_media)
        if mode == "embed":
            block = _replace(block, BYTES_COLUMN, blobs, pa.list_(pa.binary()))
        elif BYTES_COLUMN in block.column_names:
            block = block.drop_columns([BYTES_COLUMN])
    if NEGATIVE_COLUMN in block.column_names:
        ids = block["id"].to_pylist()
        uris = block[NEGATIVE_COLUMN].to_pylist()
        had = (block[NEGATIVE_BYTES_COLUMN].to_pylist() if NEGATIVE_BYTES_COLUMN in block.column_names
               else [None] * len(ids))
        new_uris: list[str | None] = []
        neg_blobs: list[bytes | None] = []
        for rid, uri, have in zip(ids, uris, had, strict=True):
            if uri is None:
                new_uris.append(None)
                neg_blobs.append(None)
                continue
            out, data = porter.ref_uri(rid, NEGATIVE_COLUMN, uri, bytes(have) if have is not None else None)
            new_uris.append(out)
            neg_blobs.append(data)
        block = _replace(block, NEGATIVE_COLUMN, new_uris)
        if mode == "embed":
            block = _replace(block, NEGATIVE_BYTES_COLUMN, neg_blobs, pa.binary())
        elif NEGATIVE_BYTES_COLUMN in block.column_names:
            block = block.drop_columns([NEGATIVE_BYTES_COLUMN])
    return block
