"""Stage ``object_boxes``: validate object boxes and normalise them to pixel ``xyxy``.

Consumes ``kind``, ``boxes`` (``label``, ``bbox``, ``format`` in pascal_voc | coco | yolo |
albumentations) and the first image ref's ``width``/``height`` (read from the image header when
absent). Produces ``boxes_xyxy`` (list<list<double>>: one ``[x1, y1, x2, y2]`` in pixels per box,
in box order, clipped to the image; null on rows that are not object rows or are rejected); the
original ``boxes`` are kept. Rejects with ``ERR_CROSS_MDL_OBJ_BBOX``, detail naming the first bad
box index and label: a bbox that is not 4 numbers, an unknown format, a non-finite value, an
inverted box (x1 > x2 or y1 > y2), a degenerate box (zero or negative side, or a side below
``min_side_px``), a box more than ``outside_tolerance_px`` outside the image, or boxes on an
image whose size is unknown. Rows of other kinds pass unchanged.

The checks are vectorised with numpy over the flattened Arrow list columns (no per-box Python).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from access.io import read_bytes, resolve_media_uri
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows

FORMATS: tuple[str, ...] = ("pascal_voc", "coco", "yolo", "albumentations")
BOXES_XYXY_TYPE = pa.list_(pa.list_(pa.float64()))
# Per-box problem codes, in the order they are looked for (the first one found is reported).
OK, BAD_LENGTH, BAD_FORMAT, NO_SIZE, NON_FINITE, INVERTED, DEGENERATE, OUTSIDE = range(8)
# Linear coefficients of each format (index into FORMATS), see to_xyxy.
_K1 = np.array([0.0, 0.0, -0.5, 0.0])
_K2 = np.array([0.0, 1.0, 1.0, 0.0])
_K3 = np.array([1.0, 1.0, 0.5, 1.0])
_NORMALISED = np.array([False, False, True, True])


def to_xyxy(coords: np.ndarray, fmt: np.ndarray, width: np.ndarray, height: np.ndarray
             ) -> np.ndarray:
    """Pixel ``x1, y1, x2, y2`` of ``coords`` (n x 4) given per-box format index into ``FORMATS``
    and image size. No validation: inverted or non-finite input stays so in the output."""
    # Every format is linear per axis: start = s * (p + k1 * q), end = s * (k2 * p + k3 * q)
    # with (p, q) = (a, c) on x and (b, d) on y, and s the image side for normalised formats.
    f = np.clip(fmt, 0, 3)
    k1, k2, k3 = _K1[f], _K2[f], _K3[f]
    normalised = _NORMALISED[f]
    sx = np.where(normalised, width, 1).astype(np.float64)
    sy = np.where(normalised, height, 1).astype(np.float64)
    out = np.empty((len(coords), 4), np.float64)
    for lo, hi, s in ((0, 2, sx), (1, 3, sy)):
        p, q = coords[:, lo], coords[:, hi]
        out[:, lo] = s * (p + k1 * q)
        out[:, hi] = s * (k2 * p + k3 * q)
    return out


def from_xyxy(xyxy: np.ndarray, fmt: np.ndarray, width: np.ndarray, height: np.ndarray
               ) -> np.ndarray:
    """Inverse of :func:`to_xyxy`: pixel ``xyxy`` (n x 4) to each box's own format."""
    x1, y1, x2, y2 = xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3]
    w, h = width.astype(np.float64), height.astype(np.float64)
    voc, coco, yolo = fmt == 0, fmt == 1, fmt == 2
    a = np.where(voc | coco, x1, np.where(yolo, (x1 + x2) / 2 / w, x1 / w))
    b = np.where(voc | coco, y1, np.where(yolo, (y1 + y2) / 2 / h, y1 / h))
    c = np.where(voc, x2, np.where(coco, x2 - x1, np.where(yolo, (x2 - x1) / w, x2 / w)))
    d = np.where(voc, y2, np.where(coco, y2 - y1, np.where(yolo, (y2 - y1) / h, y2 / h)))
    return np.stack([a, b, c, d], axis=1)


def box_problems(coords: np.ndarray, fmt: np.ndarray, width: np.ndarray, height: np.ndarray,
                 tolerance: float, min_side: float) -> tuple[np.ndarray, np.ndarray]:
    """(problem code per box, pixel xyxy per box). ``coords`` rows of NaN with ``fmt == -2``
    mean "bbox is not 4 numbers"; ``fmt == -1`` is an unknown format; size <= 0 is unknown."""
    with np.errstate(invalid="ignore", over="ignore"):
        xyxy = to_xyxy(coords, fmt, width, height)
        finite = np.isfinite(xyxy).all(axis=1)  # a non-finite input always reaches the output
        ends_given = (fmt == 0) | (fmt == 3)  # these formats can be written inverted
        inverted = ends_given & ((xyxy[:, 0] > xyxy[:, 2]) | (xyxy[:, 1] > xyxy[:, 3]))
        side = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
        degenerate = (side <= 0) | (side < min_side)
        outside = ((xyxy[:, 0] < -tolerance) | (xyxy[:, 1] < -tolerance)
                   | (xyxy[:, 2] > width + tolerance) | (xyxy[:, 3] > height + tolerance))
    no_size = (width <= 0) | (height <= 0)
    code = np.select(
        [fmt == -2, fmt == -1, no_size, ~finite, inverted, degenerate, outside],
        [BAD_LENGTH, BAD_FORMAT, NO_SIZE, NON_FINITE, INVERTED, DEGENERATE, OUTSIDE],
        default=OK,
    ).astype(np.int8)
    return code, xyxy


def describe_problem(code: int, raw: list[float], xyxy: np.ndarray, w: int, h: int,
                     fmt: str | None, tolerance: float, min_side: float) -> str:
    """Short sentence for one box problem, in pixels ("x2=300 is beyond width 256")."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if code == BAD_LENGTH:
        return f"bbox has {len(raw)} values, not 4"
    if code == BAD_FORMAT:
        return f"unknown box format {fmt!r} (expected one of {', '.join(FORMATS)})"
    if code == NO_SIZE:
        return "image size unknown: no image ref with width/height or a readable header"
    if code == NON_FINITE:
        return f"non-finite coordinate in {raw}"
    if code == INVERTED:
        return f"x1 > x2 ({x1:g} > {x2:g})" if x1 > x2 else f"y1 > y2 ({y1:g} > {y2:g})"
    if code == DEGENERATE:
        bw, bh = x2 - x1, y2 - y1
        name, size = ("width", bw) if bw <= bh else ("height", bh)
        if size <= 0:
            return f"degenerate: {'zero' if size == 0 else 'negative'} {name} ({size:g} px)"
        return f"degenerate: {name} {size:g} px is below the minimum side of {min_side:g} px"
    tol = f" (tolerance {tolerance:g} px)"
    if x1 < -tolerance:
        return f"x1={x1:g} is left of 0{tol}"
    if y1 < -tolerance:
        return f"y1={y1:g} is above 0{tol}"
    if x2 > w + tolerance:
        return f"x2={x2:g} is beyond width {w}{tol}"
    return f"y2={y2:g} is beyond height {h}{tol}"


def _bool_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def first_image_sizes(media: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per row: width and height of the first image ref (0 where absent), vectorised."""
    arr = media.combine_chunks() if isinstance(media, pa.ChunkedArray) else media
    n = len(arr)
    width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
    refs = arr.flatten()
    if len(refs) == 0:
        return width, height
    parent = arr.value_parent_indices().to_numpy()
    fields = dict(zip([f.name for f in refs.type], refs.flatten(), strict=True))
    is_image = _bool_numpy(pc.equal(fields["modality"], "image"))
    img_pos = np.flatnonzero(is_image)
    rows, first = np.unique(parent[img_pos], return_index=True)
    pick = img_pos[first]
    width[rows] = pc.fill_null(fields["width"], 0).to_numpy()[pick]
    height[rows] = pc.fill_null(fields["height"], 0).to_numpy()[pick]
    return width, height


def read_image_size(uri: str, root: str | None) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None when it cannot be read."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(read_bytes(resolve_media_uri(uri, root)))) as img:
            return int(img.size[0]), int(img.size[1])
    except Exception:  # noqa: BLE001 - unreadable media is media_check's verdict, not ours
        return None


def image_size_of_row(row: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) of a row's first image ref: from the ref, else from the file header."""
    for ref in row.get("media") or ():
        if ref and ref.get("modality") == "image":
            if ref.get("width") and ref.get("height"):
                return int(ref["width"]), int(ref["height"])
            return read_image_size(ref.get("uri") or "", row.get("manifest_root"))
    return None


def row_boxes_xyxy(row: dict[str, Any]) -> list[list[float]] | None:
    """A row's boxes in pixel xyxy: ``boxes_xyxy`` when present, else converted (no checks).
    None when a box cannot be converted (bad length, unknown format, unknown image size)."""
    if row.get("boxes_xyxy") is not None:
        return [list(b) for b in row["boxes_xyxy"]]
    boxes = row.get("boxes") or []
    if not boxes:
        return []
    size = image_size_of_row(row)
    if size is None or any(len(b.get("bbox") or ()) != 4 or b.get("format") not in FORMATS
                           for b in boxes):
        return None
    coords = np.array([[np.nan if v is None else v for v in b["bbox"]] for b in boxes], np.float64)
    fmt = np.array([FORMATS.index(b["format"]) for b in boxes])
    n = len(boxes)
    xyxy = to_xyxy(coords, fmt, np.full(n, size[0]), np.full(n, size[1]))
    return xyxy.tolist()


class ObjectBoxesParams(StageParams):
    """Box validation settings (pixels)."""

    outside_tolerance_px: float = Field(
        default=1.0, ge=0, description="how far a box may reach outside the image before it is rejected")
    min_side_px: float = Field(default=1.0, gt=0, description="smallest allowed box width and height")
    clip_to_image: bool = Field(default=True, description="clip boxes_xyxy to the image (within tolerance)")
    read_missing_size: bool = Field(
        default=True, description="read the image header when the image ref has no width/height")


class ObjectBoxes(Stage):
    """Validate object boxes, add ``boxes_xyxy`` (see the module docstring)."""

    name: ClassVar[str] = "object_boxes"
    params_model: ClassVar[type[StageParams]] = ObjectBoxesParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=1024)
    output_fields: ClassVar[list[pa.Field]] = [pa.field("boxes_xyxy", BOXES_XYXY_TYPE)]
    error_code: ClassVar[ReasonCode] = ReasonCode.OBJ_BBOX

    def process(self, rows: pa.Table) -> pa.Table:
        p: ObjectBoxesParams = self.params  # type: ignore[assignment]
        n = rows.num_rows
        is_object = _bool_numpy(pc.equal(rows["kind"], "object"))
        boxes = rows["boxes"].combine_chunks()
        row_has_boxes = is_object & (pc.fill_null(pc.list_value_length(boxes), 0).to_numpy() > 0)
        width, height = first_image_sizes(rows["media"])
        if p.read_missing_size:
            for i in np.flatnonzero(row_has_boxes & ((width <= 0) | (height <= 0))):
                row = {"media": rows["media"][int(i)].as_py(),
                       "manifest_root": rows["manifest_root"][int(i)].as_py()}
                size = image_size_of_row(row)
                if size is not None:
                    width[i], height[i] = size

        parent = boxes.value_parent_indices().to_numpy()
        flat = boxes.flatten()
        keep = is_object[parent]
        fields = dict(zip([f.name for f in flat.type], flat.flatten(), strict=True))
        bbox = fields["bbox"]
        lengths = pc.fill_null(pc.list_value_length(bbox), 0).to_numpy()
        offsets = bbox.offsets.to_numpy()[:-1]
        values = np.asarray(bbox.values.to_numpy(zero_copy_only=False), np.float64)
        four = lengths == 4
        start = int(offsets[0]) if len(offsets) else 0
        if four.all() and len(values) >= start + 4 * len(flat) and np.array_equal(
                offsets, start + 4 * np.arange(len(flat))):
            coords = values[start:start + 4 * len(flat)].reshape(-1, 4)  # the common case: a view
        else:
            coords = np.full((len(flat), 4), np.nan)
            coords[four] = values[offsets[four, None] + np.arange(4)]
        fmt = pc.fill_null(pc.index_in(fields["format"], value_set=pa.array(FORMATS)), -1)
        fmt = np.where(four, fmt.to_numpy(), -2)
        code, xyxy = box_problems(coords, fmt, width[parent], height[parent],
                                  p.outside_tolerance_px, p.min_side_px)
        code[~keep] = OK

        row_offsets = (boxes.offsets.to_numpy() - boxes.offsets[0].as_py()).astype(np.int32)
        bad = np.flatnonzero(code != OK)
        verdicts: list[Verdict | None] = [None] * n
        row_bad = np.zeros(n, bool)
        if len(bad):
            bad_rows, first, counts = np.unique(parent[bad], return_index=True, return_counts=True)
            row_bad[bad_rows] = True
            firsts = bad[first]
            take = pa.array(firsts)
            described = zip(bad_rows.tolist(), firsts.tolist(), counts.tolist(),
                            fields["label"].take(take).to_pylist(),
                            bbox.take(take).to_pylist(), fields["format"].take(take).to_pylist(),
                            strict=True)
            for r, j, k, label, raw, fmt_name in described:
                why = describe_problem(int(code[j]), raw or [], xyxy[j], int(width[r]),
                                       int(height[r]), fmt_name, p.outside_tolerance_px,
                                       p.min_side_px)
                total = int(row_offsets[r + 1] - row_offsets[r])
                more = f" ({k} of {total} boxes invalid)" if k > 1 else ""
                index = j - int(row_offsets[r])
                verdicts[r] = Verdict(ReasonCode.OBJ_BBOX, f"box {index} ({label!r}): {why}{more}")
        if p.clip_to_image:
            with np.errstate(invalid="ignore"):
                wb, hb = width[parent].astype(np.float64), height[parent].astype(np.float64)
                xyxy = np.clip(xyxy, 0.0, np.stack([wb, hb, wb, hb], axis=1))
        inner = pa.ListArray.from_arrays(np.arange(0, 4 * len(flat) + 1, 4, dtype=np.int32),
                                         pa.array(xyxy.reshape(-1), pa.float64()))
        valid = is_object & ~row_bad & boxes.is_valid().to_numpy(zero_copy_only=False)
        out = pa.ListArray.from_arrays(pa.array(row_offsets), inner, type=BOXES_XYXY_TYPE,
                                       mask=pa.array(~valid))
        rows = rows.set_column(rows.schema.get_field_index("boxes_xyxy"),
                               pa.field("boxes_xyxy", BOXES_XYXY_TYPE), out)
        return reject_rows(rows, verdicts, self.name)
