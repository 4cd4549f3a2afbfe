"""Stage ``media_check``: every media ref resolves, exists, matches its sha256 and decodes.

Consumes ``media`` and ``manifest_root``. Produces no column. Rejects with
``ERR_CROSS_MDL_MEDIA`` (detail names the media index): a scheme other than file/s3, a relative
uri escaping the manifest root, a missing object, a sha256 mismatch, bytes that do not decode as
the declared modality, image dimensions that differ from ``width``/``height``, a
``features_path`` that does not resolve.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from access.io import MediaPathError, filesystem_for, read_bytes, resolve_media_uri
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows


def decode_problem(modality: str, data: bytes, ref: dict[str, Any]) -> str | None:
    """Why ``data`` does not decode as ``modality`` (None when it does)."""
    import cv2
    import numpy as np

    if modality == "image":
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            return "is not a decodable image"
        h, w = img.shape[:2]
        if ref.get("width") not in (None, w) or ref.get("height") not in (None, h):
            return f"is {w}x{h}, the ref says {ref.get('width')}x{ref.get('height')}"
        return None
    if modality == "audio":
        import io

        import soundfile

        try:
            info = soundfile.info(io.BytesIO(data))
        except (RuntimeError, soundfile.LibsndfileError) as err:
            return f"is not decodable audio ({err})"
        if info.frames <= 0:
            return "is audio with no samples"
        return None
    # video: OpenCV needs a file path
    with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
        tmp.write(data)
        tmp.flush()
        cap = cv2.VideoCapture(tmp.name)
        try:
            ok, _frame = cap.read()
        finally:
            cap.release()
    return None if ok else "is not a decodable video"


def check_media_refs(
    refs: list[dict[str, Any]], root: str | None, verify_sha256: bool, decode: bool, max_bytes: int
) -> Verdict | None:
    for k, ref in enumerate(refs):
        label = f"media[{k}] ({ref['uri']})"
        try:
            uri = resolve_media_uri(ref["uri"], root)
        except MediaPathError as err:
            return Verdict(ReasonCode.MEDIA, f"{label}: {err}")
        try:
            data = read_bytes(uri, max_bytes=max_bytes)
        except FileNotFoundError:
            return Verdict(ReasonCode.MEDIA, f"{label}: file not found")
        except (OSError, ValueError) as err:
            return Verdict(ReasonCode.MEDIA, f"{label}: cannot be read: {err}")
        if verify_sha256 and ref.get("sha256"):
            actual = hashlib.sha256(data).hexdigest()
            if actual != ref["sha256"]:
                return Verdict(
                    ReasonCode.MEDIA, f"{label}: sha256 mismatch (ref {ref['sha256'][:12]}…, file {actual[:12]}…)"
                )
        if decode:
            problem = decode_problem(ref["modality"], data, ref)
            if problem:
                return Verdict(ReasonCode.MEDIA, f"{label} {problem}")
        if ref.get("features_path"):
            try:
                fpath = resolve_media_uri(ref["features_path"], root)
                fs, path = filesystem_for(fpath)
                exists = fs.get_file_info(path).is_file
            except (MediaPathError, OSError) as err:
                return Verdict(ReasonCode.MEDIA, f"media[{k}].features_path: {err}")
            if not exists:
                return Verdict(ReasonCode.MEDIA, f"media[{k}].features_path ({ref['features_path']}): file not found")
    return None


class MediaCheckParams(StageParams):
    verify_sha256: bool = Field(default=True, description="compare each ref's sha256 with the file's")
    decode: bool = Field(default=True, description="decode images/audio/video headers to prove they are readable")
    max_media_bytes: int = Field(default=1 << 30, gt=0, description="refuse to read a media object larger than this")


class MediaCheck(Stage):
    name = "media_check"
    params_model = MediaCheckParams
    resources = Resources(num_cpus=0.5, batch_size=64)
    error_code: ClassVar[ReasonCode] = ReasonCode.MEDIA

    def process(self, rows: pa.Table) -> pa.Table:
        p = self.params
        if not isinstance(p, MediaCheckParams):
            raise TypeError(type(p))
        roots = rows["manifest_root"].to_pylist()
        verdicts = [
            check_media_refs(refs or [], roots[i], p.verify_sha256, p.decode, p.max_media_bytes)
            for i, refs in enumerate(rows["media"].to_pylist())
        ]
        return reject_rows(rows, verdicts, self.name)
