"""MMC4 and OBELICS interleaved documents -> document records.

``xmodal import mmc4 docs_shard_0.jsonl --images images/ --out m.jsonl``: one document a line,
``{"url", "text_list": [...], "image_info": [{"image_name", "raw_url", "matched_text_index"}]}``;
each image is placed after the sentence it was matched to, and read from ``--images`` by its
``image_name``.

``xmodal import obelics shard.parquet --images images/ --out m.jsonl`` (Parquet or JSONL):
``{"texts": [str|null, ...], "images": [url|null, ...], "general_metadata": "{\\"url\\": ...}"}``,
the two lists interleaved position by position; an image is read from ``--images`` by its
value when that is a relative path there, else by the file name of its URL.

Each document becomes one ``document`` record: items in source order (``text`` and ``image``
with ``media_index``, all on page 1, no layout boxes), an empty content (``document_interleave``
writes it), the document URL as the source.

Rejected, one line per document: an image file that is not there (MEDIA, naming the image);
lists of different lengths, a position with both or neither text and image, a
``matched_text_index`` outside the text list, no text at all (SCHEMA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import UserError
from pipeline.interchange.manifest import (
    ImportProblem,
    ManifestWriter,
    existing_file,
    media_problem,
    record_id,
    schema_problem,
)


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_table(path).to_pylist())
        except OSError as err:
            raise UserError(f"{path}: not a readable Parquet file: {err}") from None
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                obj = {"_unparsable": f"{path.name}:{lineno}: invalid JSON: {err.msg}"}
            rows.append(obj if isinstance(obj, dict) else {"_unparsable": f"{path.name}:{lineno}: not an object"})
    return rows


def _document(rid: str, items: list[dict[str, Any]], images: list[Path], source: str | None, where: str,
              writer: ManifestWriter) -> dict[str, Any]:
    if not any(i["type"] == "text" and i["text"].strip() for i in items):
        raise schema_problem(f"{where}: no text")
    src, licence = writer.provenance(source, None, where)
    return {"id": rid, "kind": "document", "content": "", "source": src, "license": licence, "items": items,
            "media": [{"modality": "image", "uri": writer.media_path(p)} for p in images]}


def mmc4_record(rid: str, doc: dict[str, Any], where: str, base: Path, writer: ManifestWriter) -> dict[str, Any]:
    texts = doc.get("text_list")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise schema_problem(f"{where}: text_list is not a list of strings")
    after: dict[int, list[tuple[int, Path]]] = {}
    infos = doc.get("image_info") or []
    for k, info in enumerate(infos):
        idx = info.get("matched_text_index") if isinstance(info, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < len(texts):
            raise schema_problem(f"{where}: image_info[{k}].matched_text_index {idx!r} is outside text_list "
                                 f"(0..{len(texts) - 1})")
        path = existing_file(base, info.get("image_name"), f"{where}: image_info[{k}].image_name")
        after.setdefault(idx, []).append((k, path))
    items: list[dict[str, Any]] = []
    images: list[Path] = []
    for i, text in enumerate(texts):
        items.append({"type": "text", "text": text, "page": 1})
        for _, path in after.get(i, []):
            items.append({"type": "image", "media_index": len(images), "page": 1})
            images.append(path)
    return _document(rid, items, images, doc.get("url"), where, writer)


def _image_file(base: Path, value: str, where: str) -> Path:
    candidate = base / value
    if "://" not in value and candidate.is_file():
        return candidate
    name = Path(urlsplit(value).path).name
    if name and (base / name).is_file():
        return base / name
    raise media_problem(f"{where}: image {value!r} is not under {base} (by path or by its file name)")


def obelics_record(rid: str, doc: dict[str, Any], where: str, base: Path, writer: ManifestWriter) -> dict[str, Any]:
    texts, imgs = doc.get("texts"), doc.get("images")
    if not isinstance(texts, list) or not isinstance(imgs, list) or len(texts) != len(imgs):
        raise schema_problem(f"{where}: texts and images must be lists of the same length")
    items: list[dict[str, Any]] = []
    images: list[Path] = []
    for k, (text, img) in enumerate(zip(texts, imgs, strict=True)):
        if (text is None) == (img is None):
            raise schema_problem(f"{where}: position {k} has {'both' if text is not None else 'neither'} "
                                 "text and image")
        if text is not None:
            items.append({"type": "text", "text": str(text), "page": 1})
        else:
            images.append(_image_file(base, str(img), f"{where}: images[{k}]"))
            items.append({"type": "image", "media_index": len(images) - 1, "page": 1})
    meta = doc.get("general_metadata")
    try:
        source = (json.loads(meta) if isinstance(meta, str) else meta or {}).get("url")
    except (json.JSONDecodeError, AttributeError):
        source = None
    return _document(rid, items, images, source, where, writer)


def import_interleaved(fmt: str, files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    build = mmc4_record if fmt == "mmc4" else obelics_record
    for path in files:
        base = images_dir or path.parent
        for k, doc in enumerate(_rows(path)):
            rid = record_id(fmt, f"{path.stem}-{k}")
            where = f"{path.name}[{k}]"
            try:
                if "_unparsable" in doc:
                    raise schema_problem(doc["_unparsable"])
                writer.add(build(rid, doc, where, base, writer))
            except ImportProblem as problem:
                writer.reject_problem(rid, "document", problem)
