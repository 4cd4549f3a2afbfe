"""COCO instances + captions JSON -> object records, one per image.

``xmodal import coco instances_val2017.json captions_val2017.json --images val2017/ --out m.jsonl``

Each image becomes one ``object`` record: its image (``--images`` folder, default the JSON's
folder), every annotation as a box (``format: coco``, ``[x, y, width, height]`` in pixels,
labelled with its category name), its first caption as the content with the category names it
mentions anchored as ``<box>`` tags, and the other captions as ``captions``. The licence is the
image's entry in the ``licenses`` table, else ``--license``; the source is the image's
``coco_url``/``flickr_url``, else ``--source``.

Rejected (one reject line per image): an image file that is missing (MEDIA); an annotation with
a box of the wrong arity or non-numbers, an unknown ``category_id`` or ``image_id`` (SCHEMA,
naming the annotation); an image without a caption (SCHEMA: an object record needs text).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.interchange.anchoring import anchor_labels
from pipeline.interchange.manifest import (
    IMAGE_SPAN,
    ImportProblem,
    ManifestWriter,
    box_numbers,
    existing_file,
    record_id,
    schema_problem,
)
from schemas.reason_codes import ReasonCode


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not JSON: {err}") from None


def _split(files: list[Path]) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]],
                                       list[tuple[str, dict[str, Any]]], dict[Any, str], dict[Any, str]]:
    """(images, box annotations, caption annotations, categories by id, licence names by id)
    gathered from every file; a file is instances or captions by its annotations' keys."""
    images: dict[Any, dict[str, Any]] = {}
    boxes: list[tuple[str, dict[str, Any]]] = []
    captions: list[tuple[str, dict[str, Any]]] = []
    categories: dict[Any, str] = {}
    licences: dict[Any, str] = {}
    for path in files:
        doc = load_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise UserError(f"{path}: not a COCO file (no 'images' list)")
        for img in doc["images"]:
            if isinstance(img, dict) and "id" in img:
                images.setdefault(img["id"], img)
        for cat in doc.get("categories") or []:
            categories[cat.get("id")] = str(cat.get("name"))
        for lic in doc.get("licenses") or []:
            licences[lic.get("id")] = str(lic.get("name") or lic.get("url") or "")
        for k, ann in enumerate(doc.get("annotations") or []):
            where = f"{path.name} annotations[{k}] (id {ann.get('id')})"
            (captions if "caption" in ann else boxes).append((where, ann))
    return list(images.values()), boxes, captions, categories, licences


def import_coco(files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    """Write one record (or reject line) per COCO image of ``files`` (module docstring)."""
    images, box_anns, cap_anns, categories, licences = _split(files)
    base = images_dir or files[0].parent
    known = {img["id"] for img in images}
    by_image_boxes: dict[Any, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    by_image_caps: dict[Any, list[str]] = defaultdict(list)
    problems: dict[Any, ImportProblem] = {}
    for where, ann in box_anns:
        if ann.get("image_id") not in known:
            # No image to hang the reject on: the annotation itself is the sample that fails.
            writer.reject(record_id("coco-ann", ann.get("id")), "object", ReasonCode.SCHEMA,
                          f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        by_image_boxes[ann["image_id"]].append((where, ann))
    for where, ann in cap_anns:
        if ann.get("image_id") in known and isinstance(ann.get("caption"), str):
            by_image_caps[ann["image_id"]].append(" ".join(ann["caption"].split()))
        elif ann.get("image_id") in known:
            problems[ann["image_id"]] = schema_problem(f"{where}: caption is not a string")
    for img in sorted(images, key=lambda i: str(i["id"])):
        rid = record_id("coco", img["id"])
        try:
            if img["id"] in problems:
                raise problems[img["id"]]
            writer.add(_record(rid, img, by_image_boxes[img["id"]], by_image_caps[img["id"]],
                               categories, licences, base, writer))
        except ImportProblem as problem:
            writer.reject_problem(rid, "object", problem)


def _record(rid: str, img: dict[str, Any], anns: list[tuple[str, dict[str, Any]]], caps: list[str],
            categories: dict[Any, str], licences: dict[Any, str], base: Path,
            writer: ManifestWriter) -> dict[str, Any]:
    where = f"images (id {img['id']})"
    path = existing_file(base, img.get("file_name"), f"{where}: file_name")
    boxes: list[dict[str, Any]] = []
    for ann_where, ann in anns:
        if ann.get("category_id") not in categories:
            raise schema_problem(f"{ann_where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = box_numbers(ann.get("bbox"), ann_where)
        boxes.append({"label": categories[ann["category_id"]], "bbox": bbox, "format": "coco"})
    if not caps:
        raise schema_problem(f"{where}: no caption (give the captions JSON with the instances)")
    source, licence = writer.provenance(img.get("coco_url") or img.get("flickr_url"),
                                        licences.get(img.get("license")), where)
    media: dict[str, Any] = {"modality": "image", "uri": writer.media_path(path)}
    for key in ("width", "height"):
        if isinstance(img.get(key), int) and img[key] > 0:
            media[key] = img[key]
    labels = [str(b["label"]) for b in boxes]
    record: dict[str, Any] = {
        "id": rid, "kind": "object", "content": f"{IMAGE_SPAN} {anchor_labels(caps[0], labels)}",
        "media": [media], "source": source, "license": licence, "boxes": boxes,
    }
    if len(caps) > 1:
        record["captions"] = caps[1:]
    return record
