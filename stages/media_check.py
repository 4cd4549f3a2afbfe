"""Stage ``media_check``: every media ref resolves, exists, stays within the decoding limits,
matches its sha256 and decodes.

Consumes ``media`` and ``manifest_root``. Produces no column. Rejects with
``ERR_CROSS_MDL_MEDIA`` (detail names the media index): a ref outside the allowed media roots
(``access.paths``; ingest has refused those already, this catches rows built by hand), a
missing object, an object over ``max_media_bytes``, a header over a decoding limit
(``access.media_limits``: image pixels, audio sample rate and duration, video frame size,
frame count and duration; the detail gives the measured value), a sha256 mismatch, bytes that
do not decode as the declared modality, image dimensions that differ from ``width``/``height``,
a ``features_path`` that does not resolve.

Nothing is read whole: the size is checked before the first byte, the header before the
sha256 (a sparse 1 GiB WAV is refused by its duration without hashing a gigabyte), the sha256
is computed in 1 MiB pieces and an image is decoded only within the pixel limit.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from access.io import MediaFile, MediaPathError, filesystem_for, local_copy, open_media, resolve_media_uri
from access.media_limits import (
    MediaHeaderError,
    MediaLimitError,
    MediaLimits,
    audio_header,
    image_header,
    video_capture,
)
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows


def header_problem(modality: str, media: MediaFile, ref: dict[str, Any], limits: MediaLimits) -> str | None:
    """Why the header breaks a limit or the media do not decode (None when they are fine): an
    image's pixels and a video's first frame are decoded once their header has passed."""
    try:
        if modality == "image":
            image = image_header(media.stream, limits)
            w, h = image.size
            if ref.get("width") not in (None, w) or ref.get("height") not in (None, h):
                return f"is {w}x{h}, the ref says {ref.get('width')}x{ref.get('height')}"
            image.load()
        elif modality == "audio":
            if audio_header(media.stream, limits).frames <= 0:
                return "is audio with no samples"
        else:
            suffix = os.path.splitext(media.local_path or ref["uri"])[1] or ".video"
            with local_copy(media, suffix) as path, video_capture(path, limits) as (capture, _):
                if not capture.read()[0]:
                    return "is not a decodable video"
    except (MediaLimitError, MediaHeaderError) as err:
        return str(err)
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for broken pixel data
        return f"is not a decodable {modality} ({err})"
    return None


def check_media_ref(k: int, ref: dict[str, Any], root: str | None, p: MediaCheckParams) -> Verdict | None:
    label = f"media[{k}] ({ref['uri']})"
    try:
        uri = resolve_media_uri(ref["uri"], root)
        with open_media(uri, p.max_media_bytes) as media:
            problem = header_problem(ref["modality"], media, ref, p) if p.decode else None
            if problem:
                return Verdict(ReasonCode.MEDIA, f"{label}: {problem}")
            if p.verify_sha256 and ref.get("sha256"):
                actual = media.sha256()
                if actual != ref["sha256"]:
                    return Verdict(ReasonCode.MEDIA,
                                   f"{label}: sha256 mismatch (ref {ref['sha256'][:12]}…, file {actual[:12]}…)")
    except MediaPathError as err:
        return Verdict(ReasonCode.MEDIA, f"{label}: {err}")
    except FileNotFoundError:
        return Verdict(ReasonCode.MEDIA, f"{label}: file not found")
    except (OSError, ValueError) as err:
        return Verdict(ReasonCode.MEDIA, f"{label}: cannot be read: {err}")
    if ref.get("features_path"):
        try:
            fs, path = filesystem_for(resolve_media_uri(ref["features_path"], root))
            exists = fs.get_file_info(path).is_file
        except (MediaPathError, OSError) as err:
            return Verdict(ReasonCode.MEDIA, f"media[{k}].features_path: {err}")
        if not exists:
            return Verdict(ReasonCode.MEDIA, f"media[{k}].features_path ({ref['features_path']}): file not found")
    return None


def check_media_refs(refs: list[dict[str, Any]], root: str | None, p: MediaCheckParams) -> Verdict | None:
    for k, ref in enumerate(refs):
        verdict = check_media_ref(k, ref, root, p)
        if verdict is not None:
            return verdict
    return None


class MediaCheckParams(StageParams, MediaLimits):
    verify_sha256: bool = Field(default=True, description="compare each ref's sha256 with the file's")
    decode: bool = Field(default=True, description="read each header against the decoding limits and "
                         "decode images and a video's first frame to prove they are readable")


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
        verdicts = [check_media_refs(refs or [], roots[i], p) for i, refs in enumerate(rows["media"].to_pylist())]
        return reject_rows(rows, verdicts, self.name)
