"""WebDataset / img2dataset tar shards -> object records (image + caption).

``xmodal import webdataset shards/{00000..00009}.tar --out m.jsonl`` (the shell expands the
braces; a folder is read as all its ``*.tar``). Members are grouped into samples the way
``webdataset`` does: the key is the member path up to the first dot of its file name, the rest
is the extension. A sample's ``jpg``/``jpeg``/``png``/``webp`` is written to
``media/webdataset/<shard>/<key>.<ext>`` beside the manifest, its caption is ``txt`` (else the
``caption`` of its ``json``), its source the json's ``url`` (else ``--source``), its licence
the json's ``license`` (else ``--license``), its width and height the json's when given.

Rejected: a sample without an image member or whose img2dataset ``status`` is not
``success`` (MEDIA); one without a caption, a ``json`` that does not parse (SCHEMA). A tar that
cannot be opened is a user error naming the file.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.interchange.manifest import (
    IMAGE_SPAN,
    ImportProblem,
    ManifestWriter,
    media_problem,
    record_id,
    schema_problem,
)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def split_key(name: str) -> tuple[str, str]:
    """``dir/000001.seg.jpg`` -> (``dir/000001``, ``seg.jpg``): webdataset's key rule."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def tar_samples(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    """The samples of one tar in member order: (key, {extension: bytes})."""
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile() or member.name.rpartition("/")[2].startswith("."):
                    continue
                key, ext = split_key(member.name)
                handle = tar.extractfile(member)
                if handle is not None and ext:
                    samples.setdefault(key, {})[ext] = handle.read()
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"{path}: not a readable tar: {err}") from None
    return list(samples.items())


def _record(rid: str, key: str, parts: dict[str, bytes], shard: Path, writer: ManifestWriter) -> dict[str, Any]:
    where = f"{shard.name}:{key}"
    meta: dict[str, Any] = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise schema_problem(f"{where}.json: not JSON: {err}") from None
        meta = meta if isinstance(meta, dict) else {}
    if meta.get("status") not in (None, "success"):
        raise media_problem(f"{where}: img2dataset status {meta.get('status')!r}: {meta.get('error_message')}")
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if ext is None:
        raise media_problem(f"{where}: no image member (.{', .'.join(IMAGE_EXTS)})")
    caption = parts["txt"].decode("utf-8", "replace") if "txt" in parts else meta.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise schema_problem(f"{where}: no caption (.txt or json caption)")
    source, licence = writer.provenance(meta.get("url"), meta.get("license"), where)
    uri = writer.write_media(f"media/webdataset/{shard.stem}/{key}.{ext}", parts[ext])
    media: dict[str, Any] = {"modality": "image", "uri": uri}
    media.update({k: meta[k] for k in ("width", "height") if isinstance(meta.get(k), int) and meta[k] > 0})
    return {"id": rid, "kind": "object", "content": f"{IMAGE_SPAN} {' '.join(caption.split())}",
            "media": [media], "source": source, "license": licence}


def import_webdataset(files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    shards = [p for f in files for p in (sorted(f.glob("*.tar")) if f.is_dir() else [f])]
    for shard in shards:
        for key, parts in tar_samples(shard):
            rid = record_id("wds", f"{shard.stem}-{key}")
            try:
                writer.add(_record(rid, key, parts, shard, writer))
            except ImportProblem as problem:
                writer.reject_problem(rid, "object", problem)
