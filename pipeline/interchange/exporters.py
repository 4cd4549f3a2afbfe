"""Exporters: a published release as WebDataset tars, LLaVA conversation JSON, or a Hugging Face
dataset folder.

- ``webdataset``: ``DIR/NNNNN.tar`` with ``<id>.<jpg|png|...>`` (the image's own bytes), ``<id>.txt``
  (the caption: the content without markup) and ``<id>.json`` (id, source, license, captions,
  boxes) per kept object row with an image, ``samples_per_shard`` a tar, and ``sizes.json``, so
  that ``webdataset.WebDataset`` and open_clip's training loader (``--train-data
  'DIR/{00000..000NN}.tar' --dataset-type webdataset``, sizes from ``sizes.json``) read them as
  they are.
- ``llava``: ``DIR/llava.json`` (a list of ``{"id", "image", "conversations"}``) and the images
  under ``DIR/images/``; a row imported from LLaVA gets its turns back, any other image row a
  one-turn description (``<image>\\nDescribe the image.`` -> the caption).
- ``hf``: a copy of the release that ``datasets.load_dataset(DIR)`` opens: per-kind shards with
  only their columns and the ``release_part`` marker (``pipeline.release.kind_schemas``),
  embeddings as fixed-size arrays, media copied into ``DIR/media/`` and referenced relative to
  it (``pipeline.release.portable``), JSONL beside the Parquet, negatives and rejects as their
  own configs, and the card ``README.md`` (``pipeline.release.card``). The same functions are
  what the release writer calls to make every release like this.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.interchange.llava import IMAGE_TOKEN, conversation_turns
from pipeline.interchange.release_files import iter_batches, kinds, media_data, open_release, shard_paths
from stages.caption_markup import strip_markup

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def caption_of(content: str | None) -> str:
    return " ".join(strip_markup(content or "").split())


def _image_rows(root: Path, manifest: dict[str, Any]) -> Iterator[tuple[dict[str, Any], int, str]]:
    """(row, media index of its first image, extension) of every kept row with an image."""
    for kind in kinds(manifest, root):
        for batch in iter_batches(shard_paths(root, manifest, f"data/{kind}-")):
            for row in batch.to_pylist():
                for k, ref in enumerate(row.get("media") or []):
                    if ref and ref.get("modality") == "image":
                        ext = IMAGE_EXTS.get(Path(ref["uri"].split("?")[0]).suffix.lower(), "png")
                        yield row, k, ext
                        break


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # same release, same bytes
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(release: str, out: str, samples_per_shard: int = 1000) -> str:
    root, manifest = open_release(release)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    tar: tarfile.TarFile | None = None
    for row, k, ext in _image_rows(root, manifest):
        if row["kind"] != "object":
            continue
        if tar is None or sizes[Path(str(tar.name)).name] >= samples_per_shard:
            if tar is not None:
                tar.close()
            name = f"{len(sizes):05d}.tar"
            sizes[name] = 0
            tar = tarfile.open(target / name, "w", format=tarfile.USTAR_FORMAT)
        meta = {"id": row["id"], "source": row.get("source"), "license": row.get("license"),
                "captions": row.get("captions") or [], "boxes": row.get("boxes") or []}
        _tar_add(tar, f"{row['id']}.{ext}", media_data(root, row, k))
        _tar_add(tar, f"{row['id']}.txt", caption_of(row.get("content")).encode())
        _tar_add(tar, f"{row['id']}.json", json.dumps(meta, ensure_ascii=False).encode())
        sizes[Path(str(tar.name)).name] += 1
    if tar is not None:
        tar.close()
    if not sizes:
        raise UserError(f"{release}: no kept object row with an image to export")
    (target / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    last = f"{len(sizes) - 1:05d}"
    return (f"{sum(sizes.values())} samples in {len(sizes)} tar(s) under {target}\n"
            f"open_clip: --train-data '{target}/{{00000..{last}}}.tar' --dataset-type webdataset")


def export_llava(release: str, out: str) -> str:
    root, manifest = open_release(release)
    target = Path(out)
    (target / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for row, k, ext in _image_rows(root, manifest):
        image = f"images/{row['id']}.{ext}"
        (target / image).write_bytes(media_data(root, row, k))
        turns = conversation_turns(row.get("content") or "")
        if turns is None or not any(IMAGE_TOKEN in t["value"] for t in turns):
            turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\nDescribe the image."},
                     {"from": "gpt", "value": caption_of(row.get("content"))}]
        entries.append({"id": row["id"], "image": image, "conversations": turns})
    if not entries:
        raise UserError(f"{release}: no kept row with an image to export")
    (target / "llava.json").write_text(json.dumps(entries, ensure_ascii=False, indent=1) + "\n")
    return f"{len(entries)} conversations in {target / 'llava.json'}"


def export_hf(release: str, out: str | None) -> str:
    from pipeline.release.card import CardConfig, card_markdown
    from pipeline.release.kind_schemas import NonNullCounts, kind_columns, shard_table
    from pipeline.release.portable import portable_media
    from pipeline.release.shards import encode_jsonl

    root, manifest = open_release(release)
    if out is None or Path(out).resolve() == root.resolve():
        raise UserError("export hf writes a new folder (--out DIR): the release's own shards are hashed in its "
                        "manifest.json and stay as they are")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"--out {out}: not empty")
    target.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes) -> None:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    configs: list[CardConfig] = []
    licenses: set[str] = set()
    groups = [(kind, "data", shard_paths(root, manifest, f"data/{kind}-")) for kind in kinds(manifest, root)]
    groups += [("negatives", "negatives", shard_paths(root, manifest, "negatives/")),
               ("rejects", "rejects", shard_paths(root, manifest, "rejects/"))]
    for name, part, paths in groups:
        if not paths:
            continue
        counts = NonNullCounts()
        schema = pq.read_schema(paths[0])
        for batch in iter_batches(paths):
            counts.add(batch)
        columns = kind_columns(name, schema, counts, part)
        tables = []
        for batch in iter_batches(paths):
            if part != "rejects":
                batch = portable_media(batch, "copy", str(target), put=put, source_root=str(root))
                licenses.update(x for x in batch["license"].to_pylist() if x)
            tables.append(shard_table(batch, name, columns, part))
        table = pa.concat_tables(tables)
        stem = {"data": f"data/{name}", "negatives": "negatives/pairs", "rejects": "rejects/part"}[part]
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        put(f"{stem}-00000.parquet", buffer.getvalue())
        if part == "data":
            put(f"jsonl/{name}-00000.jsonl", encode_jsonl(table))
        configs.append(CardConfig(name, [f"{stem}-*.parquet"], table.schema))
    if not configs:
        raise UserError(f"{release}: no shards")
    card = card_markdown(manifest.get("dataset", root.parent.name), manifest.get("version", root.name), configs,
                         licenses=sorted(licenses), counts=manifest.get("counts"), media="copy")
    (target / "README.md").write_text(card)
    shutil.copyfile(root / "manifest.json", target / "xmodal_manifest.json")
    return f"{target}: {', '.join(c.name for c in configs)} (load_dataset({str(target)!r}, CONFIG))"


def run_export(fmt: str, release: str, out: str | None, samples_per_shard: int = 1000) -> str:
    if fmt == "webdataset":
        if not out:
            raise UserError("export webdataset: --out DIR is required")
        return export_webdataset(release, out, samples_per_shard)
    if fmt == "llava":
        if not out:
            raise UserError("export llava: --out DIR is required")
        return export_llava(release, out)
    if fmt == "hf":
        return export_hf(release, out)
    raise UserError(f"unknown export format {fmt!r} (webdataset, llava, hf)")
