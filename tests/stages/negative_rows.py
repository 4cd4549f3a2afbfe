"""Shared by the negatives tests: a tiny random open_clip checkpoint, shape images, object rows.

The tiny checkpoint is a real open_clip model (random weights, saved as ``open_clip_config.json``
+ safetensors and loaded through ``access.models``): its similarities mean nothing, so tests
that use it check what the filter computes and decides, not what a trained model knows. The demo
model test reads ``models/demo-clip`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from pipeline.world import render
from tests.stages.object_rows import object_table

REPO = Path(__file__).resolve().parents[2]
DEMO_CLIP = REPO / "models" / "demo-clip"
TINY_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(out: Path, seed: int = 0) -> Path:
    """A random tiny open_clip checkpoint directory (about 6 MB, built in well under a second)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CFG)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (out / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


def shapes_image(path: Path, shapes: list[tuple[str, str, int, int, int]], width: int = 256,
                 height: int = 192) -> list[list[float]]:
    """Draw (colour, shape, cx, cy, radius) on paper like the sample world; return pascal_voc boxes."""
    canvas = render.blank_canvas(width, height, render.PAPER_BGR)
    for colour, shape, cx, cy, r in shapes:
        render.draw_shape(canvas, shape, (cx, cy), r, render.COLOURS_BGR[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
    return [[cx - r, cy - r, cx + r, cy + r] for _, _, cx, cy, r in shapes]


def shapes_record(root: Path, rid: str, shapes: list[tuple[str, str, int, int, int]], content: str,
                  captions: list[str] | None = None) -> dict[str, Any]:
    """An object record whose image shows ``shapes`` and whose boxes are labelled "<colour> <shape>"."""
    boxes = shapes_image(root / "media" / f"{rid}.png", shapes)
    record: dict[str, Any] = {
        "id": rid, "kind": "object", "content": f"<|image_start|><|image_pad|><|image_end|> {content}",
        "media": [{"modality": "image", "uri": f"media/{rid}.png", "width": 256, "height": 192}],
        "source": "tests", "license": "CC0-1.0",
        "boxes": [{"label": f"{c} {s}", "bbox": b, "format": "pascal_voc"}
                  for (c, s, *_), b in zip(shapes, boxes, strict=True)],
    }
    if captions is not None:
        record["captions"] = captions
    return record


def shapes_table(root: Path, records: list[dict[str, Any]]) -> pa.Table:
    return object_table(records, root)


def by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist()}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
