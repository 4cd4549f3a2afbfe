"""Stage ``image_fingerprint``: a pixel-level vector per image, for finding copies.

Consumes ``media`` (image refs) and ``manifest_root``. Produces ``image_fingerprint``: per image
ref, in order, the image area-resampled to ``side`` x ``side`` RGB, each channel's mean
subtracted, unit-normalised, as float16 (``side`` 16: 768 values). A re-encoded, resized or
slightly cropped copy keeps its fingerprint (cosine >= 0.98 to its source on the sample world:
JPEG quality 80, 0.85-0.95 scale, crops of up to 3 px), while a scene with the same objects
elsewhere in the frame does not (at most 0.90); the stored CLIP embeddings of the demo model,
which hardly see where a shape is, put such scenes at 0.998 and copies as low as 0.992, so the
duplicate check runs on this column there. A uniform image has a zero fingerprint (nothing to
compare). Rejects with ``ERR_CROSS_MDL_MEDIA`` an image that cannot be read or decoded within
the decoding limits (``media_check`` normally has already).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from access.io import MediaPathError, open_media, resolve_media_uri
from access.media_limits import MediaHeaderError, MediaLimitError, MediaLimits, image_header
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.scoring import EMB_TYPE, embedding_array, set_column


class ImageFingerprintParams(StageParams, MediaLimits):
    side: int = Field(default=16, ge=4, le=64, description="thumbnail side in pixels")


def fingerprint(rgb: np.ndarray, side: int) -> np.ndarray:
    """The fingerprint of one HxWx3 uint8 image (see the module docstring)."""
    import cv2

    thumb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb = thumb.reshape(-1, 3) - thumb.reshape(-1, 3).mean(axis=0)
    norm = float(np.linalg.norm(thumb))
    return (thumb.reshape(-1) / norm if norm > 1e-6 else np.zeros(thumb.size, np.float32)).astype(np.float16)


def read_rgb(uri: str, limits: MediaLimits) -> np.ndarray:
    with open_media(uri, limits.max_media_bytes) as media:
        image = image_header(media.stream, limits)
        return np.asarray(image.convert("RGB"))


class ImageFingerprint(Stage):
    """Pixel fingerprints of every image ref (see the module docstring)."""

    name: ClassVar[str] = "image_fingerprint"
    params_model: ClassVar[type[StageParams]] = ImageFingerprintParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=64)
    output_fields: ClassVar[list[pa.Field]] = [pa.field("image_fingerprint", EMB_TYPE)]
    error_code: ClassVar[ReasonCode] = ReasonCode.MEDIA

    def _row(self, refs: list[dict[str, Any]] | None, root: str | None
             ) -> tuple[np.ndarray | None, Verdict | None]:
        p: ImageFingerprintParams = self.params  # type: ignore[assignment]
        vectors = []
        for k, ref in enumerate(refs or []):
            if not ref or ref.get("modality") != "image":
                continue
            try:
                vectors.append(fingerprint(read_rgb(resolve_media_uri(ref["uri"], root), p), p.side))
            except (MediaPathError, MediaLimitError, MediaHeaderError, OSError, ValueError) as err:
                return None, Verdict(ReasonCode.MEDIA, f"media[{k}] ({ref.get('uri')}): cannot be "
                                     f"fingerprinted: {err}")
        return (np.stack(vectors) if vectors else None), None

    def process(self, rows: pa.Table) -> pa.Table:
        roots = rows["manifest_root"].to_pylist()
        results = [self._row(refs, roots[i]) for i, refs in enumerate(rows["media"].to_pylist())]
        rows = set_column(rows, "image_fingerprint", embedding_array([r[0] for r in results]), EMB_TYPE)
        return reject_rows(rows, [r[1] for r in results], self.name)
