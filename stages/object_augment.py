"""Stage ``object_augment``: synchronized image + box augmentation with caption rewrite.

Consumes ok object rows: ``media`` (first image ref), ``boxes``, ``boxes_xyxy`` (converted from
``boxes`` when absent), ``content``, ``captions``, ``laterality``. Produces, per source row,
``copies`` new rows (``id`` ``<id>-aug<k>``, ``parent_id`` = source id) whose image is written to
``media_out`` (PNG or JPEG, ``sha256``/``width``/``height`` set; the ref's ``uri`` points there),
whose boxes moved with the pixels (albumentations 2.x ``BboxParams``: ``min_visibility``,
``min_area``, ``clip``; each box keeps its label and format), and whose text had left/right
(horizontal flip) or above/below (vertical flip) rewritten, word-boundary and case-preserving,
in content, captions and labels. ``augment_seed`` and ``augment_transforms`` (JSON list of
``{"name", "params"}`` actually applied) make each row reproducible: the same seed and transform
list give the same pixels. Source rows pass unchanged; nothing is rejected.

Not augmented: rows of other kinds, rows without an image or boxes, rows with discrete image
tokens in ``content`` (the tokens describe the original pixels), unreadable images (media_check's
verdict). Mirror transforms are never applied to orientation-sensitive rows (``laterality`` or an
image ``orientation``). A draw that drops or degenerates a box is redrawn (``max_attempts``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from access.io import read_bytes, resolve_media_uri, write_bytes
from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK
from stages.base import Resources, Stage, StageParams
from stages.object_boxes import BOXES_XYXY_TYPE, FORMATS, from_xyxy, row_boxes_xyxy
from stages.object_lexicon import rewrite_left_right, rewrite_up_down

log = logging.getLogger(__name__)
MIRROR_TRANSFORMS: frozenset[str] = frozenset({"HorizontalFlip", "VerticalFlip"})
TransformName = Literal[
    "HorizontalFlip", "VerticalFlip", "Affine", "RandomSizedBBoxSafeCrop", "BBoxSafeRandomCrop",
    "RandomBrightnessContrast", "HueSaturationValue", "ColorJitter", "GaussianBlur", "GaussNoise",
    "CLAHE", "ToGray",
]  # no Transpose/D4/RandomRotate90: they move left/right in ways no word swap describes
ParamValue = int | float | bool | str | list[int] | list[float]


class TransformSpec(BaseModel):
    """One albumentations transform by class name, with its keyword arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: TransformName
    params: dict[str, ParamValue] = Field(default_factory=dict)


DEFAULT_TRANSFORMS: tuple[TransformSpec, ...] = (
    TransformSpec(name="HorizontalFlip", params={"p": 0.5}),
    TransformSpec(name="Affine", params={"scale": [0.9, 1.1], "translate_percent": [-0.05, 0.05],
                                         "rotate": [-5.0, 5.0], "p": 0.5}),
    TransformSpec(name="RandomBrightnessContrast", params={"p": 0.3}),
)


def build_compose(specs: tuple[TransformSpec, ...] | list[TransformSpec], with_mirrors: bool,
                  min_visibility: float, min_area: float, clip: bool) -> Any:
    """An ``A.Compose`` over pascal_voc boxes carrying a ``box_index`` label field."""
    import albumentations as A

    transforms = [getattr(A, s.name)(**s.params) for s in specs
                  if with_mirrors or s.name not in MIRROR_TRANSFORMS]
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["box_index"],
                               min_visibility=min_visibility, min_area=min_area, clip=clip)
    with warnings.catch_warnings():  # "no transform to process bboxes" when only flips were given
        warnings.simplefilter("ignore", UserWarning)
        return A.Compose(transforms, bbox_params=bbox_params, save_applied_params=True)


def derive_seed(seed: int, row_id: str, copy: int, attempt: int) -> int:
    """A 32-bit seed that depends only on the stage seed, the row id, the copy and the attempt."""
    digest = hashlib.sha256(f"{seed}:{row_id}:{copy}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return round(float(value), 6)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value if isinstance(value, int | str | bool) or value is None else repr(value)


def mirror_words(text: str | None, horizontal: bool, vertical: bool) -> str | None:
    """The text of a mirrored image: left/right and/or above/below swapped."""
    if text is None:
        return None
    if horizontal:
        text = rewrite_left_right(text)
    if vertical:
        text = rewrite_up_down(text)
    return text


def encode_image(image: np.ndarray, fmt: str, png_compression: int, jpeg_quality: int) -> bytes:
    import cv2

    if fmt == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, png_compression])
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"cannot encode the augmented image as {fmt}")
    return buf.tobytes()


class ObjectAugmentParams(StageParams):
    """Augmentation settings. ``media_out`` is required (a directory path or s3:// prefix)."""

    media_out: str | None = Field(default=None, description="where augmented images are written")
    copies: int = Field(default=1, ge=0, le=64, description="augmented rows per source row")
    seed: int = Field(default=0, description="stage seed; each row's seed derives from it and the row id")
    transforms: tuple[TransformSpec, ...] = Field(default=DEFAULT_TRANSFORMS, description=(
        "albumentations transforms in order; default: HorizontalFlip p=0.5, Affine (scale "
        "0.9-1.1, translate 5%, rotate 5 deg) p=0.5, RandomBrightnessContrast p=0.3"))
    min_visibility: float = Field(default=0.3, ge=0, le=1, description="BboxParams.min_visibility")
    min_area: float = Field(default=16.0, ge=0, description="BboxParams.min_area in square pixels")
    clip: bool = Field(default=True, description="BboxParams.clip: clip moved boxes to the image")
    rewrite_captions: bool = Field(default=True, description="swap left/right (above/below) words of "
                                   "mirrored rows; off only to prove the spatial check")
    max_attempts: int = Field(default=3, ge=1, description="redraws when a draw drops or degenerates a box")
    image_format: Literal["png", "jpg"] = Field(default="png", description="format of written images")
    png_compression: int = Field(default=1, ge=0, le=9, description="PNG zlib level (1: fast)")
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality")


class ObjectAugment(Stage):
    """Synchronized augmentation (see the module docstring)."""

    name: ClassVar[str] = "object_augment"
    params_model: ClassVar[type[StageParams]] = ObjectAugmentParams
    resources: ClassVar[Resources] = Resources(num_cpus=1.0, batch_size=64)
    output_fields: ClassVar[list[pa.Field]] = [
        pa.field("boxes_xyxy", BOXES_XYXY_TYPE),
        pa.field("augment_seed", pa.int64()),
        pa.field("augment_transforms", pa.string()),
    ]
    error_code: ClassVar[ReasonCode] = ReasonCode.MEDIA

    def setup(self) -> None:
        p: ObjectAugmentParams = self.params  # type: ignore[assignment]
        if not p.media_out:
            raise ValueError("object_augment needs media_out (a directory or s3:// prefix)")
        settings = (p.min_visibility, p.min_area, p.clip)
        self._compose = build_compose(p.transforms, True, *settings)
        self._compose_no_mirror = build_compose(p.transforms, False, *settings)

    def process(self, rows: pa.Table) -> pa.Table:
        new_rows: list[dict[str, Any]] = []
        for row in rows.to_pylist():
            try:
                new_rows.extend(self.augment_row(row))
            except (OSError, ValueError) as err:  # unreadable media: media_check's verdict
                log.info("object_augment: row %s not augmented: %s", row.get("id"), err)
            except Exception:  # noqa: BLE001 - a bad image skips augmentation, not the row
                log.warning("object_augment: row %s not augmented", row.get("id"), exc_info=True)
        if not new_rows:
            return rows
        return pa.concat_tables([rows, pa.Table.from_pylist(new_rows, schema=rows.schema)])

    def augment_row(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The augmented rows of one source row (empty when it is not augmented)."""
        import cv2

        p: ObjectAugmentParams = self.params  # type: ignore[assignment]
        content = row.get("content") or ""
        if row.get("kind") != "object" or not row.get("boxes") or "<IMG_TK_" in content:
            return []
        image_at = next((i for i, r in enumerate(row.get("media") or [])
                         if r and r.get("modality") == "image"), None)
        xyxy = row_boxes_xyxy(row)
        if image_at is None or xyxy is None or not np.isfinite(np.asarray(xyxy)).all():
            return []
        ref = row["media"][image_at]
        data = read_bytes(resolve_media_uri(ref["uri"], row.get("manifest_root")))
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return []
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        sensitive = bool(row.get("laterality")) or any(
            r and r.get("modality") == "image" and r.get("orientation") for r in row["media"])
        compose = self._compose_no_mirror if sensitive else self._compose
        out = []
        for copy in range(p.copies):
            made = self._one_copy(row, image_at, rgb, np.asarray(xyxy, np.float64), compose, copy)
            if made is not None:
                out.append(made)
        return out

    def _one_copy(self, row: dict[str, Any], image_at: int, rgb: np.ndarray, xyxy: np.ndarray,
                  compose: Any, copy: int) -> dict[str, Any] | None:
        import cv2

        p: ObjectAugmentParams = self.params  # type: ignore[assignment]
        n = len(xyxy)
        for attempt in range(p.max_attempts):
            seed = derive_seed(p.seed, row["id"], copy, attempt)
            compose.set_random_seed(seed)
            result = compose(image=rgb, bboxes=xyxy, box_index=np.arange(n))
            boxes = np.asarray(result["bboxes"], np.float64).reshape(-1, 4)
            sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            if len(boxes) == n and bool((sides >= 1.0).all()):
                break
        else:
            return None
        # albumentations computes in float32: round to 1/1000 px so that 40 stays 40
        boxes = np.round(boxes[np.argsort(np.asarray(result["box_index"]))], 3)
        applied = [(name, params) for name, params in result["applied_transforms"]]
        names = [name for name, _ in applied]
        rewrite = p.rewrite_captions
        hflip = rewrite and names.count("HorizontalFlip") % 2 == 1
        vflip = rewrite and names.count("VerticalFlip") % 2 == 1
        image = cv2.cvtColor(result["image"], cv2.COLOR_RGB2BGR)
        height, width = image.shape[:2]
        encoded = encode_image(image, p.image_format, p.png_compression, p.jpeg_quality)
        new_id = f"{row['id'][:118]}-aug{copy}"
        media_out = str(p.media_out)
        name = f"{new_id}.{p.image_format}"
        uri = f"{media_out.rstrip('/')}/{name}" if media_out.startswith("s3://") else os.path.join(
            os.path.abspath(media_out), name)
        write_bytes(uri, encoded)

        media = [dict(r) if r else r for r in row["media"]]
        media[image_at].update(uri=uri, sha256=hashlib.sha256(encoded).hexdigest(),
                               width=int(width), height=int(height))
        fmt = np.array([FORMATS.index(b["format"]) for b in row["boxes"]])
        values = from_xyxy(boxes, fmt, np.full(n, width), np.full(n, height))
        new_boxes = [{"label": mirror_words(b["label"], hflip, vflip), "bbox": v.tolist(),
                      "format": b["format"]} for b, v in zip(row["boxes"], values, strict=True)]
        record = [{"name": nm, "params": _jsonable({k: v for k, v in prm.items() if k != "shape"})}
                  for nm, prm in applied]
        return {
            **row,
            "id": new_id,
            "parent_id": row["id"],
            "status": STATUS_OK,
            "reject_stage": None, "reject_code": None, "reject_detail": None,
            "content": mirror_words(row.get("content"), hflip, vflip),
            "captions": [mirror_words(c, hflip, vflip) for c in row["captions"]]
            if row.get("captions") is not None else None,
            "media": media,
            "boxes": new_boxes,
            "boxes_xyxy": boxes.tolist(),
            "augment_seed": seed,
            "augment_transforms": json.dumps(record, separators=(",", ":")),
        }
