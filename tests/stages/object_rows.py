"""Object records for the object-level stage tests: a factory, a PNG writer and the check chain.

``object_record`` builds a record dict (format v1) whose image is written under ``root/media``
with each box filled in its own colour; ``object_table`` turns records into a ROW_SCHEMA table
through the real ingest (so tests see exactly what the pipeline sees).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from pipeline.run.ingest import parse_manifest_bytes
from stages.object_anchor import ObjectAnchor
from stages.object_boxes import ObjectBoxes
from stages.object_hallucination import ObjectHallucination
from stages.object_spatial import ObjectSpatial

Box = tuple[str, list[float], str]  # label, bbox, format


def write_png(path: Path, width: int, height: int, pixel_boxes: list[list[float]]) -> None:
    """A light image with one filled rectangle per pixel xyxy box (distinct colours)."""
    image = np.full((height, width, 3), 232, np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(pixel_boxes):
        colour = ((40 + 70 * i) % 256, (200 - 50 * i) % 256, (90 + 110 * i) % 256)
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def object_record(root: Path, rid: str, boxes: list[Box], content: str,
                  captions: list[str] | None = None, width: int = 256, height: int = 192,
                  write_image: bool = True, **extra: Any) -> dict[str, Any]:
    """One object record; ``content`` gets the image span prepended. Boxes are pascal_voc pixels
    when drawn; other formats are drawn from their pixel conversion by the caller's choice."""
    if write_image:
        pixel = [b for _, b, f in boxes if f == "pascal_voc" and all(np.isfinite(b))]
        write_png(root / "media" / f"{rid}.png", width, height, pixel)
    record: dict[str, Any] = {
        "id": rid,
        "kind": "object",
        "content": f"<|image_start|><|image_pad|><|image_end|> {content}",
        "media": [{"modality": "image", "uri": f"media/{rid}.png", "width": width,
                   "height": height}],
        "source": "tests",
        "license": "CC0-1.0",
        "boxes": [{"label": label, "bbox": bbox, "format": fmt} for label, bbox, fmt in boxes],
    }
    if captions is not None:
        record["captions"] = captions
    record.update(extra)
    return record


def object_table(records: list[dict[str, Any]], root: Path) -> pa.Table:
    """Records -> ROW_SCHEMA rows (status ok, manifest_root = ``root``) through ingest."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    return parse_manifest_bytes(data, str(root / "manifest.jsonl"))


def run_checks(table: pa.Table) -> pa.Table:
    """The model-free object checks in pipeline order."""
    for stage in (ObjectBoxes(), ObjectAnchor(), ObjectSpatial(), ObjectHallucination()):
        table = stage(table)
    return table


def verdicts(table: pa.Table) -> dict[str, str | None]:
    """id -> reject code (None for ok rows)."""
    return dict(zip(table["id"].to_pylist(), table["reject_code"].to_pylist(), strict=True))


def details(table: pa.Table) -> dict[str, str | None]:
    return dict(zip(table["id"].to_pylist(), table["reject_detail"].to_pylist(), strict=True))
