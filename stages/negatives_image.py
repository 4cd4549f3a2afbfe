"""Stage ``negatives_image``: cross-modal attribute swap on the image side (colour of one object).

Consumes ok object rows that are not negatives themselves: ``media`` (first image), ``boxes``
(or ``boxes_xyxy``), ``content`` and ``captions``. For up to ``max_per_row`` boxes (seeded
order) whose label names a colour that a caption states for that object (and no other box has
the same object and colour), it shifts the hue of the object's pixels inside the box with
OpenCV: the object's pixels are those whose colour is at least ``min_colour_distance`` from the
background, estimated as the median of a ``ring_px`` ring just outside the box; the background
keeps its pixels. The target colour is one of ``target_colours`` at least ``min_hue_shift_deg``
away on the hue circle (and, with ``avoid_named_colours``, not a colour the caption names).
The edited image is written as PNG under ``media_out``; the caption is kept, so the edited
image and the caption form the negative pair.

Produces one row per edit: ``id`` ``<id>-imneg<k>``, ``parent_id`` = the source id,
``negative_type="colour_swap_image"``, ``negative_media`` (uri of the edited image),
``positive_text`` (the caption), ``negative_edit`` (``colour: red -> blue (box 0, ...)``).
Source rows pass unchanged; nothing is rejected (unreadable media are media_check's verdict).
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from pydantic import Field

from access.io import read_bytes, resolve_media_uri, write_bytes
from schemas.records import STATUS_OK
from stages.base import Resources, Stage, StageParams
from stages.caption_edits import COLOUR_FAMILY, positive_captions, seeded_rng
from stages.negatives_mining import NEGATIVE_FIELDS
from stages.object_boxes import row_boxes_xyxy
from stages.object_lexicon import find_object_mentions, label_profile

log = logging.getLogger(__name__)
NEGATIVE_TYPE = "colour_swap_image"
# Hue (degrees) of the saturated colours an object can be recoloured to or recognised as.
HUE_DEG: dict[str, float] = {"red": 0.0, "orange": 30.0, "yellow": 52.0, "green": 125.0, "cyan": 180.0,
                             "blue": 226.0, "purple": 280.0, "magenta": 305.0}


def hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def pixel_box(xyxy: list[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box clipped to the image, or None when empty or not finite."""
    if not all(math.isfinite(v) for v in xyxy):
        return None
    x1, y1 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x2, y2 = min(width, math.ceil(xyxy[2])), min(height, math.ceil(xyxy[3]))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def object_mask(image: np.ndarray, box: tuple[int, int, int, int], ring_px: int, min_distance: float) -> np.ndarray:
    """Pixels of the box (h x w bool) whose colour is far from the background around the box."""
    x1, y1, x2, y2 = box
    height, width = image.shape[:2]
    ox1, oy1 = max(0, x1 - ring_px), max(0, y1 - ring_px)
    ox2, oy2 = min(width, x2 + ring_px), min(height, y2 + ring_px)
    ring = np.ones((oy2 - oy1, ox2 - ox1), dtype=bool)
    ring[y1 - oy1:y2 - oy1, x1 - ox1:x2 - ox1] = False
    pixels = image[oy1:oy2, ox1:ox2][ring]
    if len(pixels) < 8:  # the box fills the image: its own border is the best guess
        inner = image[y1:y2, x1:x2]
        pixels = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    background = np.median(pixels.reshape(-1, 3).astype(np.float32), axis=0)
    region = image[y1:y2, x1:x2].astype(np.float32)
    return np.asarray(np.linalg.norm(region - background, axis=2) >= min_distance)


class HueStats(NamedTuple):
    hue_deg: float  # saturation-weighted circular mean
    chromatic_pixels: int


def hue_stats(region_bgr: np.ndarray, mask: np.ndarray, min_saturation: int) -> HueStats:
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(region_bgr), cv2.COLOR_BGR2HSV)
    chosen = hsv[mask & (hsv[:, :, 1] >= min_saturation)]
    if len(chosen) == 0:
        return HueStats(0.0, 0)
    angle = chosen[:, 0].astype(np.float64) * (np.pi / 90.0)  # OpenCV hue is degrees / 2
    weight = chosen[:, 1].astype(np.float64)
    mean = math.degrees(math.atan2(float((weight * np.sin(angle)).sum()), float((weight * np.cos(angle)).sum())))
    return HueStats(mean % 360.0, len(chosen))


def shift_hue(image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray, delta_deg: float) -> np.ndarray:
    """A copy of ``image`` whose masked pixels inside ``box`` have their hue turned by ``delta_deg``."""
    import cv2

    x1, y1, x2, y2 = box
    out = image.copy()
    hsv = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_BGR2HSV)
    hue = hsv[:, :, 0].astype(np.int32)
    hsv[:, :, 0] = ((hue + int(round(delta_deg / 2.0))) % 180).astype(np.uint8)
    shifted = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    region = out[y1:y2, x1:x2]
    region[mask] = shifted[mask]
    return out


def choose_target(hue_deg: float, targets: tuple[str, ...], avoid: set[str], min_shift_deg: float,
                  rng: np.random.Generator) -> str | None:
    """A target colour far enough around the hue circle, not in ``avoid`` (colour families)."""
    options = [c for c in targets if c in HUE_DEG and COLOUR_FAMILY.get(c, c) not in avoid
               and hue_distance(HUE_DEG[c], hue_deg) >= min_shift_deg]
    return options[int(rng.integers(len(options)))] if options else None


def stated_colour_caption(captions: list[str], label: str) -> str | None:
    """The first caption that names the label's object with one of the label's colours."""
    profile = label_profile(label)
    if not profile.colours:
        return None
    for caption in captions:
        for mention in find_object_mentions(caption):
            if mention.canonical == profile.canonical and profile.colours & set(mention.modifiers):
                return caption
    return None


class NegativesImageParams(StageParams):
    """Where edited images go and how objects are recoloured."""

    media_out: str | None = Field(default=None, description="directory or s3:// prefix for edited images (required)")
    max_per_row: int = Field(default=1, ge=1, le=16, description="objects recoloured per source row, one image each")
    target_colours: tuple[str, ...] = Field(default=("red", "orange", "yellow", "green", "blue", "purple"),
                                            description=f"colours to recolour to; known: {', '.join(HUE_DEG)}")
    min_hue_shift_deg: float = Field(default=60.0, ge=10, le=180)
    avoid_named_colours: bool = Field(default=True, description="never recolour to a colour the caption names")
    ring_px: int = Field(default=3, ge=1, description="width of the background ring outside the box")
    min_colour_distance: float = Field(
        default=40.0, gt=0, description="BGR distance from the background of object pixels")
    min_saturation: int = Field(default=50, ge=0, le=255, description="HSV saturation below which a pixel has no hue")
    min_object_pixels: int = Field(default=30, ge=1, description="fewest chromatic object pixels worth recolouring")
    seed: int = 0
    png_compression: int = Field(default=1, ge=0, le=9)


class NegativesImage(Stage):
    """Recolour one object inside its box; the caption is kept (see the module docstring)."""

    name: ClassVar[str] = "negatives_image"
    params_model: ClassVar[type[StageParams]] = NegativesImageParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=64)
    output_fields: ClassVar[tuple[pa.Field, ...]] = NEGATIVE_FIELDS
    params: NegativesImageParams

    def setup(self) -> None:
        if not self.params.media_out:
            raise ValueError("negatives_image needs media_out (a directory or s3:// prefix)")
        unknown = [c for c in self.params.target_colours if c not in HUE_DEG]
        if unknown:
            raise ValueError(f"negatives_image: unknown target colours {unknown}; known: {', '.join(HUE_DEG)}")

    def process(self, rows: pa.Table) -> pa.Table:
        new_rows: list[dict[str, Any]] = []
        for row in rows.to_pylist():
            if row.get("kind") != "object" or row.get("negative_type") is not None or not row.get("boxes"):
                continue
            try:
                new_rows.extend(self.recolour_row(row))
            except (OSError, ValueError) as err:  # unreadable media: media_check's verdict, not ours
                log.info("negatives_image: row %s not edited: %s", row.get("id"), err)
        if not new_rows:
            return rows
        return pa.concat_tables([rows, pa.Table.from_pylist(new_rows, schema=rows.schema)])

    def recolour_row(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The negative rows of one source row (empty when no object can be recoloured)."""
        import cv2

        p = self.params
        ref = next((r for r in row.get("media") or [] if r and r.get("modality") == "image"), None)
        xyxy = row_boxes_xyxy(row)
        if ref is None or not xyxy:
            return []
        labels = [b["label"] for b in row["boxes"]]
        keys = [(label_profile(lb).canonical, label_profile(lb).colours) for lb in labels]
        captions = positive_captions(row)
        candidates = [(i, cap) for i, lb in enumerate(labels) if keys.count(keys[i]) == 1
                      and (cap := stated_colour_caption(captions, lb)) is not None]
        if not candidates:
            return []
        image = cv2.imdecode(np.frombuffer(read_bytes(resolve_media_uri(ref["uri"], row.get("manifest_root"))),
                                           np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode image {ref['uri']}")
        rng = seeded_rng(p.seed, row["id"], "imneg")
        out: list[dict[str, Any]] = []
        for at in rng.permutation(len(candidates)):
            if len(out) >= p.max_per_row:
                break
            box_index, caption = candidates[int(at)]
            made = self.recolour_box(row, image, xyxy[box_index], box_index, labels[box_index], caption, rng,
                                     len(out))
            if made is not None:
                out.append(made)
        return out

    def recolour_box(self, row: dict[str, Any], image: np.ndarray, xyxy: list[float], box_index: int, label: str,
                     caption: str, rng: np.random.Generator, k: int) -> dict[str, Any] | None:
        import cv2

        p = self.params
        box = pixel_box(xyxy, image.shape[1], image.shape[0])
        if box is None:
            return None
        mask = object_mask(image, box, p.ring_px, p.min_colour_distance)
        x1, y1, x2, y2 = box
        stats = hue_stats(image[y1:y2, x1:x2], mask, p.min_saturation)
        if stats.chromatic_pixels < p.min_object_pixels:
            return None
        old = sorted(label_profile(label).colours)[0]
        avoid = {COLOUR_FAMILY.get(old, old)}
        if p.avoid_named_colours:
            avoid |= {COLOUR_FAMILY[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in COLOUR_FAMILY}
        target = choose_target(stats.hue_deg, p.target_colours, avoid, p.min_hue_shift_deg, rng)
        if target is None:
            return None
        delta = (HUE_DEG[target] - stats.hue_deg) % 360.0
        edited = shift_hue(image, box, mask, delta)
        ok, buf = cv2.imencode(".png", edited, [cv2.IMWRITE_PNG_COMPRESSION, p.png_compression])
        if not ok:
            raise ValueError("cannot encode the edited image as PNG")
        new_id = f"{row['id'][:116]}-imneg{k}"
        media_out = str(p.media_out)
        name = f"{new_id}.png"
        uri = (f"{media_out.rstrip('/')}/{name}" if media_out.startswith("s3://")
               else os.path.join(os.path.abspath(media_out), name))
        write_bytes(uri, buf.tobytes())
        return {
            **row, "id": new_id, "parent_id": row["id"], "status": STATUS_OK,
            "reject_stage": None, "reject_code": None, "reject_detail": None,
            "negative_type": NEGATIVE_TYPE, "negative_text": None, "negative_media": uri, "positive_text": caption,
            "negative_edit": (f"colour: {old} -> {target} (box {box_index}, hue {stats.hue_deg:.0f} -> "
                              f"{HUE_DEG[target]:.0f} deg, {int(mask.sum())} px)"),
        }
