"""Dataset-level faults of the sample world: template captions and near-duplicate images.

No single row of these is wrong, so they are planned apart from the record faults and only
when asked for (``generate_world(..., dataset_faults=RATE)``): every world generated without
them keeps its bytes, and ``xmodal check``, which has no embeddings, is not expected to see them.

- ``template_caption``: groups of :data:`TEMPLATE_GROUP` plain object records whose scenes are
  drawn anew to contain one shape left of another (the same two labels within a group), each
  in another variant (sizes, a third shape or none), with one sentence, "The A is left of the
  B.", as their content: true of every scene, informative of none (the scenes differ in count,
  colour and size). Their extra captions are the scenes' own. A check that keeps ``max_uses``
  best-scoring uses of a caption rejects the others with ``ERR_CROSS_MDL_TEMPLATE``: every
  member is listed, and a correct check rejects all of a group but ``max_uses``.
- ``near_duplicate_image``: a record that is a copy of another clean plain object record (its
  source): the same content, captions and boxes, the image cropped by 1-3 px a side, resized to
  0.85-0.95 and re-encoded as JPEG at quality 75-90, boxes moved with the pixels. The copy has
  fewer pixels than its source, so a check that keeps the larger image rejects the copy with
  ``ERR_CROSS_MDL_DUPLICATE`` and keeps the source (which is clean and not listed).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.world import render
from pipeline.world.boxes import box_to_pixel_xyxy, format_box
from pipeline.world.faults import FaultKind, PlannedRecord
from pipeline.world.objects import (
    EDGE_MARGIN_PX,
    RADIUS_BY_SIZE,
    RELATION_MIN_PX,
    SHAPE_GAP_PX,
    ObjectScene,
    PlacedShape,
    _boxes_overlap,
    image_span,
    object_captions,
)
from schemas.reason_codes import ReasonCode

TEMPLATE_GROUP = 8
SIZES = ("small", "large")


def _plain_object(record: PlannedRecord) -> bool:
    return isinstance(record.spec, ObjectScene) and not record.spec.laterality


TEMPLATE_CAPTION = FaultKind("template_caption", ReasonCode.TEMPLATE, "dataset", _plain_object)
NEAR_DUPLICATE_IMAGE = FaultKind("near_duplicate_image", ReasonCode.DUPLICATE, "dataset", _plain_object)
DATASET_FAULT_KINDS: tuple[FaultKind, ...] = (TEMPLATE_CAPTION, NEAR_DUPLICATE_IMAGE)


def template_sentence(scene: ObjectScene) -> str:
    first, second = scene.shapes[0], scene.shapes[1]
    return f"The {first.label} is left of the {second.label}."


def _variants(first: str, second: str, rng: np.random.Generator) -> list[tuple[str, str, str | None, str]]:
    """(size of the left shape, of the right one, third label or None, its size), seeded order,
    two-shape variants interleaved with three-shape ones so that a group differs in count."""
    labels = [f"{c} {s}" for c in render.COLOURS_BGR for s in render.SHAPES if f"{c} {s}" not in (first, second)]
    pairs = list(itertools.product(SIZES, SIZES))
    two = [(a, b, None, "small") for a, b in pairs]
    three = [(a, b, labels[int(i)], SIZES[int(rng.integers(2))])
             for (a, b), i in zip(itertools.cycle(pairs), rng.permutation(len(labels)), strict=False)]
    order = [two[int(i)] for i in rng.permutation(len(two))]
    return [v for pair in itertools.zip_longest(order, three) for v in pair if v is not None]


def _shape(label: str, size: str, cx: int, cy: int, radius: int) -> PlacedShape:
    colour, shape = label.split(" ")
    return PlacedShape(colour, shape, size, cx, cy, radius)


def plan_template_scene(base: ObjectScene, first: str, second: str,
                        variant: tuple[str, str, str | None, str], rng: np.random.Generator
                        ) -> ObjectScene | None:
    """``base`` redrawn with ``first`` clearly left of ``second`` (and the variant's third
    shape), or None when no placement was found."""
    w, h = base.width, base.height
    size_a, size_b, third, size_c = variant
    for _ in range(400):
        ra, rb = (int(rng.integers(*RADIUS_BY_SIZE[s], endpoint=True)) for s in (size_a, size_b))
        lo_a, lo_b = ra + EDGE_MARGIN_PX, rb + EDGE_MARGIN_PX
        a = _shape(first, size_a, int(rng.integers(lo_a, w // 2)), int(rng.integers(lo_a, h - lo_a)), ra)
        b_lo = max(a.cx + RELATION_MIN_PX + 16, w // 2)  # clearly right of the first shape
        if b_lo >= w - lo_b:
            continue
        b = _shape(second, size_b, int(rng.integers(b_lo, w - lo_b)), int(rng.integers(lo_b, h - lo_b)), rb)
        shapes = [a, b]
        if third is not None:
            rc = int(rng.integers(*RADIUS_BY_SIZE[size_c], endpoint=True))
            lo_c = rc + EDGE_MARGIN_PX
            shapes.append(_shape(third, size_c, int(rng.integers(lo_c, w - lo_c)),
                                 int(rng.integers(lo_c, h - lo_c)), rc))
        boxes = [s.box for s in shapes]
        if any(_boxes_overlap(p, q, SHAPE_GAP_PX) for p, q in itertools.combinations(boxes, 2)):
            continue
        scene = replace(base, shapes=tuple(shapes), laterality=False)
        return replace(scene, captions=tuple(object_captions(scene, rng)))
    return None


def plan_dataset_faults(planned: list[PlannedRecord], taken: Sequence[str], rate: float,
                        rng: np.random.Generator) -> tuple[list[PlannedRecord], dict[str, FaultKind]]:
    """Choose carriers among plain object records without a fault (``taken`` have one): about
    ``rate / 2`` of all records carry a template caption (in groups of :data:`TEMPLATE_GROUP`,
    none when fewer fit) and as many are near-duplicate copies of another clean record. Returns
    the plan with the carriers' scenes replaced, and the carriers' faults."""
    wanted = int(round(len(planned) * rate / 2))
    free = [i for i, r in enumerate(planned) if r.record_id not in set(taken) and _plain_object(r)]
    free = [free[int(i)] for i in rng.permutation(len(free))]
    plan, faults = list(planned), {}
    groups = wanted // TEMPLATE_GROUP if len(free) >= 2 * wanted + TEMPLATE_GROUP else 0
    labels = [f"{c} {s}" for c in render.COLOURS_BGR for s in render.SHAPES]
    for _ in range(groups):
        first, second = (labels[int(i)] for i in rng.choice(len(labels), 2, replace=False))
        for variant in _variants(first, second, rng)[:TEMPLATE_GROUP]:
            index = free.pop()
            base = plan[index].spec
            if not isinstance(base, ObjectScene):
                continue
            scene = plan_template_scene(base, first, second, variant, rng)
            if scene is not None:
                plan[index] = PlannedRecord(plan[index].record_id, "object", scene)
                faults[plan[index].record_id] = TEMPLATE_CAPTION
    copies = min(wanted, len(free) // 2)
    sources, carriers = free[:copies], free[copies:2 * copies]
    for source, carrier in zip(sources, carriers, strict=True):
        original = plan[source].spec
        if isinstance(original, ObjectScene):
            record_id = plan[carrier].record_id
            plan[carrier] = PlannedRecord(record_id, "object", replace(original, record_id=record_id))
            faults[record_id] = NEAR_DUPLICATE_IMAGE
    return plan, faults


def template_caption(record: dict[str, Any], rng: np.random.Generator, out_dir: Path,
                     scene: ObjectScene) -> None:
    record["content"] = f"{image_span(scene.token_ids)} {template_sentence(scene)}"


def near_duplicate_image(record: dict[str, Any], rng: np.random.Generator, out_dir: Path,
                         scene: ObjectScene) -> None:
    """Replace the record's PNG by a cropped, resized JPEG copy; move its boxes with the pixels."""
    ref = record["media"][0]
    png = out_dir / ref["uri"]
    image = cv2.imdecode(np.fromfile(str(png), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"cannot decode {png}")
    h, w = image.shape[:2]
    left, top, right, bottom = (int(rng.integers(1, 4)) for _ in range(4))
    scale = float(rng.uniform(0.85, 0.95))
    cropped = image[top:h - bottom, left:w - right]
    new_w, new_h = round(cropped.shape[1] * scale), round(cropped.shape[0] * scale)
    copy = cv2.resize(cropped, (new_w, new_h), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 91))])
    if not ok:
        raise RuntimeError("cv2 could not encode a JPEG")
    png.unlink()
    uri = f"media/{record['id']}.jpg"
    sx, sy = new_w / cropped.shape[1], new_h / cropped.shape[0]
    for box in record["boxes"]:
        x1, y1, x2, y2 = box_to_pixel_xyxy(box["bbox"], box["format"], w, h)
        moved = (round((x1 - left) * sx), round((y1 - top) * sy), round((x2 - left) * sx),
                 round((y2 - top) * sy))
        clipped = (max(0, moved[0]), max(0, moved[1]), min(new_w, moved[2]), min(new_h, moved[3]))
        box["bbox"] = format_box(clipped, box["format"], new_w, new_h)
    ref.update(uri=uri, sha256=render.write_media(out_dir / uri, bytes(data.tobytes())),
               width=new_w, height=new_h)


DATASET_EDITS = {"template_caption": template_caption, "near_duplicate_image": near_duplicate_image}
