"""Box formats and the box faults of the sample world.

Pixel boxes are ``(x1, y1, x2, y2)`` integers. The four record formats are pascal_voc (pixel
xyxy), coco (pixel xywh), yolo (normalised cx cy w h) and albumentations (normalised xyxy).
Every box fault keeps the box centre where it was (or moves it further in the direction it
already lay), so that spatial words stay true and the box is the fault's only defect.
"""

from __future__ import annotations

import math

BOX_FORMATS: tuple[str, ...] = ("pascal_voc", "coco", "yolo", "albumentations")
NORMALISED_DIGITS = 6
PixelBox = tuple[int, int, int, int]
BoxValues = list[float | int]


def format_box(box: PixelBox, box_format: str, width: int, height: int) -> BoxValues:
    """Express a pixel xyxy box in ``box_format`` for an image of ``width x height``."""
    x1, y1, x2, y2 = box
    if box_format == "pascal_voc":
        return [x1, y1, x2, y2]
    if box_format == "coco":
        return [x1, y1, x2 - x1, y2 - y1]
    if box_format == "yolo":
        return [
            round((x1 + x2) / 2 / width, NORMALISED_DIGITS),
            round((y1 + y2) / 2 / height, NORMALISED_DIGITS),
            round((x2 - x1) / width, NORMALISED_DIGITS),
            round((y2 - y1) / height, NORMALISED_DIGITS),
        ]
    if box_format == "albumentations":
        return [
            round(x1 / width, NORMALISED_DIGITS),
            round(y1 / height, NORMALISED_DIGITS),
            round(x2 / width, NORMALISED_DIGITS),
            round(y2 / height, NORMALISED_DIGITS),
        ]
    raise ValueError(f"unknown box format {box_format!r}")


def box_to_pixel_xyxy(
    bbox: BoxValues, box_format: str, width: int, height: int
) -> tuple[float, float, float, float]:
    """Inverse of :func:`format_box`, in float pixels (no rounding back to integers)."""
    a, b, c, d = (float(value) for value in bbox)
    if box_format == "pascal_voc":
        return a, b, c, d
    if box_format == "coco":
        return a, b, a + c, b + d
    if box_format == "yolo":
        return (a - c / 2) * width, (b - d / 2) * height, (a + c / 2) * width, (b + d / 2) * height
    if box_format == "albumentations":
        return a * width, b * height, c * width, d * height
    raise ValueError(f"unknown box format {box_format!r}")


def mirror_pixel_box(box: PixelBox, width: int) -> PixelBox:
    """The box of the same object after a horizontal flip of the whole image."""
    x1, y1, x2, y2 = box
    return width - x2, y1, width - x1, y2


def box_outside_image(bbox: BoxValues, box_format: str, width: int, height: int) -> BoxValues:
    """Stretch the right edge 24 px beyond the image (the caller picks the rightmost box, whose
    centre then moves further right, so "left of"/"right of" words stay true)."""
    x1, y1, _, y2 = box_to_pixel_xyxy(bbox, box_format, width, height)
    stretched = (int(round(x1)), int(round(y1)), width + 24, int(round(y2)))
    return format_box(stretched, box_format, width, height)


def box_inverted(bbox: BoxValues, box_format: str) -> BoxValues:
    """Swap left and right edges (xyxy) or negate the width (xywh, cxcywh): same centre."""
    a, b, c, d = bbox
    if box_format in ("pascal_voc", "albumentations"):
        return [c, b, a, d]
    if box_format == "coco":
        return [a + c, b, -c, d]
    if box_format == "yolo":
        return [a, b, -c, d]
    raise ValueError(f"unknown box format {box_format!r}")


def box_zero_area(bbox: BoxValues, box_format: str) -> BoxValues:
    """Collapse the width to zero around the centre."""
    a, b, c, d = bbox
    if box_format == "pascal_voc":
        centre = (a + c) // 2 if isinstance(a, int) and isinstance(c, int) else (a + c) / 2
        return [centre, b, centre, d]
    if box_format == "albumentations":
        centre = round((a + c) / 2, NORMALISED_DIGITS)
        return [centre, b, centre, d]
    if box_format == "coco":
        centre = a + c // 2 if isinstance(a, int) and isinstance(c, int) else a + c / 2
        return [centre, b, 0, d]
    if box_format == "yolo":
        return [a, b, 0, d]
    raise ValueError(f"unknown box format {box_format!r}")


def box_with_nan(bbox: BoxValues) -> BoxValues:
    """Replace the top coordinate by NaN (``json.dumps`` writes it as ``NaN``)."""
    return [bbox[0], math.nan, bbox[2], bbox[3]]
