"""Thumbnails of object rows with their boxes drawn, for the report's example rejects, and the
box colours that the review page uses too (box ``i`` has colour ``BOX_COLOURS[i % 8]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from access.io import read_bytes, resolve_media_uri
from stages.object_boxes import row_boxes_xyxy

# Distinct on white and on the sample world's saturated shapes; the label text is white on them.
BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324")
MAX_IMAGE_BYTES = 32 << 20


def box_colour(i: int) -> str:
    return BOX_COLOURS[i % len(BOX_COLOURS)]


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return b, g, r


def first_image_ref(row: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((m for m in row.get("media") or [] if m and m.get("modality") == "image"), None)


def boxed_thumbnail_png(row: Mapping[str, Any], size: int = 192) -> bytes | None:
    """PNG of the row's first image scaled to fit ``size`` px with every box drawn in its colour
    and labelled; None when the row has no readable image. Boxes that cannot be converted to
    pixels (the reason a row was rejected, often) are left out; the image is still shown."""
    import cv2

    ref = first_image_ref(row)
    if ref is None or not ref.get("uri"):
        return None
    try:
        data = read_bytes(resolve_media_uri(str(ref["uri"]), row.get("manifest_root")), MAX_IMAGE_BYTES)
    except (OSError, ValueError):
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = size / max(h, w)
    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    try:
        boxes = row_boxes_xyxy(dict(row)) or []
    except (TypeError, ValueError):
        boxes = []
    labels = [(b or {}).get("label") or "" for b in row.get("boxes") or []]
    for i, box in enumerate(boxes):
        if len(box) != 4 or not all(np.isfinite(box)):
            continue
        # OpenCV takes int32 points: a coordinate far outside the image (1e30, 2^63) is drawn the
        # same when clipped to a few image sizes around it, and no longer raises.
        x1, y1, x2, y2 = (int(round(float(np.clip(v * scale, -4 * size, 4 * size)))) for v in box)
        colour = _bgr(box_colour(i))
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = labels[i] if i < len(labels) else ""
        if label:
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            top = max(0, y1 - th - 4)
            cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + 4), colour, -1)
            cv2.putText(image, label, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
    ok, png = cv2.imencode(".png", image)
    return bytes(png) if ok else None
