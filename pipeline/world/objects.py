"""Object records: images of one to three coloured shapes, their boxes, content and captions.

Captions and content only say what the geometry makes true: a relation ("left of", "right of",
"above", "below") is stated only when the two box centres differ by more than
``RELATION_MIN_PX`` on that axis, and every named object is a box of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.world import render
from pipeline.world.boxes import BOX_FORMATS, PixelBox, format_box, mirror_pixel_box

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((256, 192), (224, 160), (192, 192))
RADIUS_BY_SIZE: dict[str, tuple[int, int]] = {"small": (12, 18), "large": (28, 38)}
RELATION_MIN_PX = 32
EDGE_MARGIN_PX = 4
SHAPE_GAP_PX = 8
# The "L" marker of laterality images lives in this top-left square; shapes stay out of it.
MARKER_BOX: PixelBox = (0, 0, 44, 44)
LATERALITY_SHARE = 0.15
TOKEN_BODY_SHARE = 0.2
TOKENS_PER_IMAGE = 4
IMAGE_VOCAB_SIZE = 8192
COUNT_WORDS = {1: "One shape", 2: "Two shapes", 3: "Three shapes"}


@dataclass(frozen=True)
class PlacedShape:
    """One shape drawn on an image: its words and its pixel geometry."""

    colour: str
    shape: str
    size: str
    cx: int
    cy: int
    radius: int

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def box(self) -> PixelBox:
        return (self.cx - self.radius, self.cy - self.radius, self.cx + self.radius,
                self.cy + self.radius)


@dataclass(frozen=True)
class SpatialRelation:
    """``subject`` is ``relation`` (left of, right of, above, below) ``reference``."""

    subject: PlacedShape
    relation: str
    reference: PlacedShape

    @property
    def is_horizontal(self) -> bool:
        return self.relation in ("left of", "right of")

    def sentence(self) -> str:
        return f"The {self.subject.label} is {self.relation} the {self.reference.label}."


@dataclass(frozen=True)
class ObjectScene:
    """Everything needed to render an object record and to word its text."""

    record_id: str
    width: int
    height: int
    shapes: tuple[PlacedShape, ...]
    box_format: str
    laterality: bool
    token_ids: tuple[int, ...] | None  # discrete image tokens, or None for one pad token
    captions: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(shape.label for shape in self.shapes)

    def relations(self) -> list[SpatialRelation]:
        return spatial_relations(self.shapes)

    @property
    def has_horizontal_relation(self) -> bool:
        return any(relation.is_horizontal for relation in self.relations())


def article(noun_phrase: str) -> str:
    """``a`` or ``an`` for the phrase (all colour and size words are plain English)."""
    return "an" if noun_phrase[:1] in "aeiou" else "a"


def spatial_relations(shapes: tuple[PlacedShape, ...]) -> list[SpatialRelation]:
    """Relations that the box centres make clearly true, for each pair in drawing order."""
    relations: list[SpatialRelation] = []
    for index, first in enumerate(shapes):
        for second in shapes[index + 1:]:
            dx, dy = second.cx - first.cx, second.cy - first.cy
            if abs(dx) > RELATION_MIN_PX:
                horizontal = "left of" if dx > 0 else "right of"
                relations.append(SpatialRelation(first, horizontal, second))
            if abs(dy) > RELATION_MIN_PX:
                vertical = "above" if dy > 0 else "below"
                relations.append(SpatialRelation(first, vertical, second))
    return relations


def _boxes_overlap(first: PixelBox, second: PixelBox, gap: int) -> bool:
    return not (first[2] + gap <= second[0] or second[2] + gap <= first[0]
                or first[3] + gap <= second[1] or second[3] + gap <= first[1])


def plan_object_scene(record_id: str, rng: np.random.Generator) -> ObjectScene:
    """Draw sizes, colours, shapes and non-overlapping positions for one image."""
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    laterality = bool(rng.random() < LATERALITY_SHARE)
    wanted = int(rng.integers(1, 4))
    all_labels = [(c, s) for c in render.COLOURS_BGR for s in render.SHAPES]
    label_order = rng.permutation(len(all_labels))
    shapes: list[PlacedShape] = []
    for _ in range(200):
        if len(shapes) == wanted:
            break
        size = "large" if rng.random() < 0.5 else "small"
        radius = int(rng.integers(*RADIUS_BY_SIZE[size], endpoint=True))
        lowest = radius + EDGE_MARGIN_PX
        if width - lowest <= lowest or height - lowest <= lowest:
            continue
        cx = int(rng.integers(lowest, width - lowest))
        cy = int(rng.integers(lowest, height - lowest))
        colour, shape = all_labels[int(label_order[len(shapes)])]
        candidate = PlacedShape(colour, shape, size, cx, cy, radius)
        taken = [placed.box for placed in shapes] + ([MARKER_BOX] if laterality else [])
        if any(_boxes_overlap(candidate.box, box, SHAPE_GAP_PX) for box in taken):
            continue
        shapes.append(candidate)
    token_ids: tuple[int, ...] | None = None
    if rng.random() < TOKEN_BODY_SHARE:
        token_ids = tuple(int(t) for t in rng.integers(0, IMAGE_VOCAB_SIZE, TOKENS_PER_IMAGE))
    scene = ObjectScene(
        record_id=record_id,
        width=width,
        height=height,
        shapes=tuple(shapes),
        box_format=BOX_FORMATS[int(rng.integers(len(BOX_FORMATS)))],
        laterality=laterality,
        token_ids=token_ids,
    )
    return replace(scene, captions=tuple(object_captions(scene, rng)))


def image_span(token_ids: tuple[int, ...] | None) -> str:
    """The image placeholder span: one pad token, or discrete tokens."""
    body = "<|image_pad|>" if token_ids is None else "".join(f"<IMG_TK_{t}>" for t in token_ids)
    return f"<|image_start|>{body}<|image_end|>"


def _listing(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def object_content(scene: ObjectScene) -> str:
    """Span, one sentence that tags every box, then one untagged relation when there is one.

    The relation sentence is untagged so that a tag fault (ANCHOR) never alters the spatial
    claim; a horizontal relation is preferred so that the FLIP fault contradicts the content.
    """
    tagged = [f"{article(s.label)} <box>{s.label}</box>" for s in scene.shapes]
    listing = _listing(tagged)
    text = f"{image_span(scene.token_ids)} {listing[0].upper()}{listing[1:]}."
    relations = sorted(scene.relations(), key=lambda relation: not relation.is_horizontal)
    if relations:
        text += " " + relations[0].sentence()
    return text


def object_captions(scene: ObjectScene, rng: np.random.Generator) -> list[str]:
    """Two to four true captions: count with sizes, relations, marker side for films."""
    described = [f"{article(s.size)} {s.size} {s.label}" for s in scene.shapes]
    captions = [f"{COUNT_WORDS[len(scene.shapes)]}: {_listing(described)}."]
    if scene.laterality:
        captions.append("The L marker is on the left side of the film.")
    relations = scene.relations()
    order = rng.permutation(len(relations)) if relations else np.array([], dtype=int)
    captions.extend(relations[int(index)].sentence() for index in order[:2])
    if len(captions) < 2:
        only = scene.shapes[0]
        captions.append(f"The {only.label} is {only.size}.")
    return captions[:4]


def render_object_image(scene: ObjectScene) -> np.ndarray:
    """BGR image of the scene: paper background, or a dark film with an "L" marker."""
    background = render.FILM_BGR if scene.laterality else render.PAPER_BGR
    canvas = render.blank_canvas(scene.width, scene.height, background)
    for shape in scene.shapes:
        render.draw_shape(canvas, shape.shape, (shape.cx, shape.cy), shape.radius,
                          render.COLOURS_BGR[shape.colour])
    if scene.laterality:
        render.draw_laterality_marker(canvas)
    return canvas


def build_object_record(
    scene: ObjectScene, out_dir: Path, mirrored: bool, common: dict[str, object]
) -> dict[str, object]:
    """Render the image and return the record.

    ``mirrored`` is the FLIP fault: image and boxes are flipped horizontally while content and
    captions keep the words of the unflipped scene.
    """
    image = render_object_image(scene)
    boxes_px = [shape.box for shape in scene.shapes]
    if mirrored:
        image = cv2.flip(image, 1)
        boxes_px = [mirror_pixel_box(box, scene.width) for box in boxes_px]
    uri = f"media/{scene.record_id}.png"
    sha256 = render.write_media(out_dir / uri, render.encode_png(image))
    media_ref: dict[str, object] = {
        "modality": "image", "uri": uri, "sha256": sha256,
        "width": scene.width, "height": scene.height,
    }
    if scene.laterality:
        media_ref["orientation"] = "canonical"
    if scene.token_ids is not None:
        media_ref["num_tokens"] = len(scene.token_ids)
    record: dict[str, object] = {
        "id": scene.record_id,
        "kind": "object",
        "content": object_content(scene),
        "media": [media_ref],
        **common,
        "boxes": [
            {"label": shape.label,
             "bbox": format_box(box, scene.box_format, scene.width, scene.height),
             "format": scene.box_format}
            for shape, box in zip(scene.shapes, boxes_px, strict=True)
        ],
        "captions": list(scene.captions),
    }
    if scene.laterality:
        record["laterality"] = True
    return record
