"""Grounding data -> object records: ODVG JSONL and RefCOCO-style referring expressions.

``xmodal import odvg train.odvg.jsonl --images images/ --out m.jsonl`` reads one image a line:
``{"filename", "width", "height", "grounding": {"caption", "regions": [{"bbox": [x1, y1, x2,
y2], "phrase", "tokens_positive": [[start, end], ...]}]}}`` (the grounding style) or
``"detection": {"instances": [{"bbox", "category"}]}`` (the detection style). Boxes are
``pascal_voc`` pixels labelled with the phrase as the caption spells it, and the caption's
characters at ``tokens_positive`` are anchored as ``<box>`` tags.

``xmodal import refcoco refs.json instances.json --images train2014/ --out m.jsonl`` reads the
refs (a JSON list, or the original ``refs(unc).p`` pickle, loaded with an unpickler that builds
only plain containers and refuses every class) and the COCO instances they point into. Each ref
becomes one record: its first sentence as the content, the others as ``captions``, the referred
box first and the image's other boxes after it (so that CHAIR knows what else is in the image),
category names anchored.

Rejected, one line per sample: a missing image (MEDIA); a box of the wrong arity, spans outside
the caption, an unknown ``ann_id``/``category_id`` (SCHEMA, naming the line or ref and field).
"""

from __future__ import annotations

import io
import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.interchange.anchoring import anchor_labels
from pipeline.interchange.coco import load_json
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


def _tag_spans(caption: str, spans: list[tuple[int, int]]) -> str:
    out, last = [], 0
    for start, end in sorted(spans):
        out += [caption[last:start], "<box>", caption[start:end], "</box>"]
        last = end
    return "".join(out) + caption[last:]


def _grounding(obj: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    """(content text, boxes) of one ODVG line."""
    if "grounding" in obj:
        g = obj["grounding"] if isinstance(obj["grounding"], dict) else {}
        caption = g.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise schema_problem(f"{where}: grounding.caption is missing or empty")
        boxes: list[dict[str, Any]] = []
        spans: list[tuple[int, int]] = []
        for k, region in enumerate(g.get("regions") or []):
            rwhere = f"{where}: grounding.regions[{k}]"
            bbox = box_numbers(region.get("bbox"), rwhere)
            label = str(region.get("phrase") or "").strip()
            for pos in region.get("tokens_positive") or []:
                if not (isinstance(pos, list | tuple) and len(pos) == 2 and all(isinstance(v, int) for v in pos)
                        and 0 <= pos[0] < pos[1] <= len(caption)):
                    raise schema_problem(f"{rwhere}.tokens_positive: {pos!r} is not a [start, end] span "
                                         f"inside the {len(caption)}-character caption")
                if not any(a < pos[1] and pos[0] < b for a, b in spans):
                    spans.append((pos[0], pos[1]))
                    label = " ".join(caption[pos[0]:pos[1]].split())
                break  # the first span names the region; the label is what the caption says
            if not label:
                raise schema_problem(f"{rwhere}: no phrase and no tokens_positive")
            boxes.append({"label": label, "bbox": bbox, "format": "pascal_voc"})
        text = _tag_spans(caption, spans) if spans else anchor_labels(caption, [b["label"] for b in boxes])
        return " ".join(text.split()), boxes
    det = obj.get("detection")
    if not isinstance(det, dict):
        raise schema_problem(f"{where}: neither 'grounding' nor 'detection'")
    boxes = []
    for k, inst in enumerate(det.get("instances") or []):
        iwhere = f"{where}: detection.instances[{k}]"
        if not isinstance(inst.get("category"), str) or not inst["category"].strip():
            raise schema_problem(f"{iwhere}: category is missing")
        boxes.append({"label": inst["category"].strip(), "bbox": box_numbers(inst.get("bbox"), iwhere),
                      "format": "pascal_voc"})
    if not boxes:
        raise schema_problem(f"{where}: detection.instances is empty")
    names = list(dict.fromkeys(b["label"] for b in boxes))
    return ", ".join(f"<box>{n}</box>" for n in names) + ".", boxes


def import_odvg(files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    for path in files:
        base = images_dir or path.parent
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: cannot be read as UTF-8 text: {err}") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            rid = record_id("odvg", f"{path.stem}-{lineno}")
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise schema_problem(f"{where}: a JSON {type(obj).__name__}, not an object")
                text, boxes = _grounding(obj, where)
                image = existing_file(base, obj.get("filename"), f"{where}: filename")
                media: dict[str, Any] = {"modality": "image", "uri": writer.media_path(image)}
                media.update({k: obj[k] for k in ("width", "height") if isinstance(obj.get(k), int) and obj[k] > 0})
                source, licence = writer.provenance(obj.get("source"), obj.get("license"), where)
                writer.add({"id": rid, "kind": "object", "content": f"{IMAGE_SPAN} {text}", "media": [media],
                            "source": source, "license": licence, "boxes": boxes})
            except json.JSONDecodeError as err:
                writer.reject(rid, "object", ReasonCode.SCHEMA, f"{where}: invalid JSON: {err.msg}")
            except ImportProblem as problem:
                writer.reject_problem(rid, "object", problem)


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers only: any class or function is refused, so a
    pickle cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refs pickle refers to {module}.{name}: only plain data is accepted")


def load_refs(path: Path) -> list[dict[str, Any]]:
    if path.suffix in (".p", ".pkl", ".pickle"):
        try:
            refs = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise UserError(f"{path}: not a plain refs pickle: {err}") from None
    else:
        refs = load_json(path)
    if not isinstance(refs, list):
        raise UserError(f"{path}: refs must be a list of {{ref_id, ann_id, image_id, sentences}}")
    return refs


def import_refcoco(files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    refs_files = [p for p in files if p.suffix in (".p", ".pkl", ".pickle") or isinstance(load_json(p), list)]
    inst_files = [p for p in files if p not in refs_files]
    if not refs_files or len(inst_files) != 1:
        raise UserError("refcoco: give the refs file(s) and exactly one COCO instances JSON")
    inst = load_json(inst_files[0])
    base = images_dir or inst_files[0].parent
    images = {img["id"]: img for img in inst.get("images") or [] if isinstance(img, dict)}
    anns = {ann.get("id"): ann for ann in inst.get("annotations") or []}
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in anns.values():
        by_image[ann.get("image_id")].append(ann)
    categories = {c.get("id"): str(c.get("name")) for c in inst.get("categories") or []}
    licences = {lic.get("id"): str(lic.get("name") or lic.get("url") or "") for lic in inst.get("licenses") or []}
    for path in refs_files:
        for k, ref in enumerate(load_refs(path)):
            ref = ref if isinstance(ref, dict) else {}
            rid = record_id("refcoco", ref.get("ref_id", f"{path.stem}-{k}"))
            try:
                writer.add(_ref_record(rid, ref, f"{path.name}[{k}] (ref_id {ref.get('ref_id')})",
                                       images, anns, by_image, categories, licences, base, writer))
            except ImportProblem as problem:
                writer.reject_problem(rid, "object", problem)


def _ref_record(rid: str, ref: dict[str, Any], where: str, images: dict[Any, dict[str, Any]],
                anns: dict[Any, dict[str, Any]], by_image: dict[Any, list[dict[str, Any]]],
                categories: dict[Any, str], licences: dict[Any, str], base: Path,
                writer: ManifestWriter) -> dict[str, Any]:
    ann = anns.get(ref.get("ann_id"))
    if ann is None:
        raise schema_problem(f"{where}: ann_id {ref.get('ann_id')!r} is not in the instances")
    img = images.get(ann.get("image_id"))
    if img is None:
        raise schema_problem(f"{where}: image_id {ann.get('image_id')!r} is not in the instances")
    sentences = [" ".join(str(s.get("sent") or s.get("raw") or "").split()) for s in ref.get("sentences") or []
                 if isinstance(s, dict)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise schema_problem(f"{where}: sentences: no referring expression")
    boxes: list[dict[str, Any]] = []
    for other in [ann] + [a for a in by_image[ann.get("image_id")] if a is not ann]:
        awhere = f"{where}: annotation {other.get('id')}"
        if other.get("category_id") not in categories:
            raise schema_problem(f"{awhere}: category_id {other.get('category_id')!r} is not in 'categories'")
        boxes.append({"label": categories[other["category_id"]], "bbox": box_numbers(other.get("bbox"), awhere),
                      "format": "coco"})
    image = existing_file(base, img.get("file_name"), f"{where}: file_name")
    media: dict[str, Any] = {"modality": "image", "uri": writer.media_path(image)}
    media.update({k: img[k] for k in ("width", "height") if isinstance(img.get(k), int) and img[k] > 0})
    source, licence = writer.provenance(img.get("coco_url") or img.get("flickr_url"),
                                        licences.get(img.get("license")), where)
    labels = [str(b["label"]) for b in boxes]
    content = f"{IMAGE_SPAN} {anchor_labels(sentences[0], labels)}"
    record: dict[str, Any] = {"id": rid, "kind": "object", "content": content,
                              "media": [media], "source": source, "license": licence, "boxes": boxes}
    if len(sentences) > 1:
        record["captions"] = sentences[1:]
    return record
