"""The report's example rejects show their image as a thumbnail with every box drawn in its
colour where the box's coordinates put it; a row whose image is missing shows none."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from pipeline.release.report import render_report
from pipeline.release.thumbnails import box_colour
from pipeline.release.writer import reconcile
from schemas.records import ROW_SCHEMA


def test_example_rejects_get_a_thumbnail_with_their_boxes(tmp_path: Path) -> None:
    image = np.full((96, 128, 3), 230, np.uint8)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    media = [{"modality": "image", "uri": "scene.png", "width": 128, "height": 96}]
    boxes = [{"label": "red circle", "bbox": [16, 40, 32, 24], "format": "coco"},  # x, y, w, h
             {"label": "blue square", "bbox": [80, 20, 112, 60], "format": "pascal_voc"}]
    rows = [
        {"id": "flip", "kind": "object", "content": "A red circle right of a blue square.", "media": media,
         "boxes": boxes, "status": "rejected", "reject_stage": "object_spatial",
         "reject_code": "ERR_CROSS_MDL_OBJ_FLIP", "reject_detail": "mirrored", "manifest_root": str(tmp_path)},
        {"id": "gone", "kind": "object", "content": "x", "status": "rejected", "reject_stage": "media_check",
         "reject_code": "ERR_CROSS_MDL_MEDIA", "reject_detail": "missing", "manifest_root": str(tmp_path),
         "media": [{"modality": "image", "uri": "nowhere.png"}], "boxes": boxes},
    ]
    table = pa.Table.from_pylist([r | {"source": "t", "license": "x"} for r in rows], schema=ROW_SCHEMA)
    page = render_report(dataset="ds", version="v1", counts=reconcile(table, 2), table=table)
    thumbs = re.findall(r"<img alt='boxes of ([^']+)' src='data:image/png;base64,([^']+)'>", page)
    assert [name for name, _ in thumbs] == ["flip"]  # the missing image gets none, and no error
    png = cv2.imdecode(np.frombuffer(base64.b64decode(thumbs[0][1]), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape[:2] == (120, 160)  # 128x96 scaled to fit 160 px
    scale = 160 / 128
    for i, (x1, y1, x2, y2) in enumerate([(16, 40, 48, 64), (80, 20, 112, 60)]):
        bgr = np.array([int(box_colour(i)[k:k + 2], 16) for k in (5, 3, 1)])
        mid = round((y1 + y2) / 2 * scale)
        hits = np.flatnonzero(np.abs(png[mid].astype(int) - bgr).max(axis=1) <= 8)
        assert abs(hits.min() - x1 * scale) <= 2 and abs(hits.max() - x2 * scale) <= 2
