"""The manifest an importer writes: record lines, reject lines, media placement, ids.

Every input sample becomes exactly one line. A record that validates as record format v1 is
written as it is; anything else (a missing file, a box of the wrong arity, an unknown category,
an unparsable subtitle, a record that fails validation) becomes a reject line::

    {"id": ..., "kind": ..., "source": ..., "license": ...,
     "import_reject": {"code": "ERR_CROSS_MDL_MEDIA", "detail": "coco images[3] (id 7): ..."}}

which ingest turns into a rejected row with that code and detail at stage ``import``, so that
``input = kept + rejected`` holds from the source files on.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from pipeline.errors import UserError
from pipeline.run.ingest import IMPORT_REJECT_FIELD, describe_validation_error
from schemas.reason_codes import ReasonCode
from schemas.records import Record

MediaMode = Literal["refer", "copy", "link"]
IMAGE_SPAN = "<|image_start|><|image_pad|><|image_end|>"
VIDEO_SPAN = "<|video_start|><|video_pad|><|video_end|>"
AUDIO_SPAN = "<|audio_start|><|audio_pad|><|audio_end|>"
_ID_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def record_id(prefix: str, raw: object) -> str:
    """A record id from a source id: ``prefix-raw`` with characters outside ``[A-Za-z0-9_-]``
    replaced; when anything was replaced (or the id is too long) a short hash of the raw id is
    appended, so that two source ids never collide."""
    text = str(raw)
    clean = _ID_BAD.sub("_", text).strip("_") or "x"
    rid = f"{prefix}-{clean}"
    if clean != text or len(rid) > 128:
        rid = f"{rid[:111]}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return rid


class ImportProblem(Exception):
    """One input sample that cannot become a record: its reason code and detail."""

    def __init__(self, code: ReasonCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def schema_problem(detail: str) -> ImportProblem:
    return ImportProblem(ReasonCode.SCHEMA, detail)


def media_problem(detail: str) -> ImportProblem:
    return ImportProblem(ReasonCode.MEDIA, detail)


@dataclass
class ManifestWriter:
    """Collects the lines of one imported manifest and places its media.

    ``media``: ``refer`` writes a media file's path relative to the manifest's folder when it
    lies inside it and absolute otherwise (then the run needs the file's folder in
    ``media_roots``); ``copy`` copies files outside the folder to ``media/<format>/`` beside the
    manifest, ``link`` hard-links them there (a copy where links cannot be made), so the
    manifest and its media move together.
    """

    out: Path
    fmt: str
    source: str | None = None
    license: str | None = None
    media: MediaMode = "refer"
    lines: list[bytes] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    _placed: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.out.resolve().parent

    def provenance(self, source: str | None, license: str | None, where: str) -> tuple[str, str]:
        """(source, license): the input's own values first, the command line's otherwise."""
        src = source or self.source or f"{self.fmt}:{where}"
        lic = license or self.license
        if not lic:
            raise schema_problem(f"{where}: license: none in the input and no --license given")
        return src, lic

    def media_path(self, path: Path, *, subdir: str = "") -> str:
        """The ``uri`` of a media file as this manifest refers to it (see the class docstring)."""
        real = path.resolve()
        key = str(real)
        if key in self._placed:
            return self._placed[key]
        root = self.root
        if real.is_relative_to(root):
            uri = real.relative_to(root).as_posix()
        elif self.media == "refer":
            uri = str(real)
        else:
            name = f"{hashlib.sha256(key.encode()).hexdigest()[:12]}-{real.name}"
            target = root / "media" / self.fmt / subdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                if self.media == "link":
                    try:
                        os.link(real, target)
                    except OSError:
                        shutil.copyfile(real, target)
                else:
                    shutil.copyfile(real, target)
            uri = target.relative_to(root).as_posix()
        self._placed[key] = uri
        return uri

    def write_media(self, relpath: str, data: bytes) -> str:
        """Write media bytes taken out of a container (a tar member, an extracted audio track)
        to ``relpath`` under the manifest's folder; returns its ``uri``."""
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target.relative_to(self.root).as_posix()

    def add(self, record: dict[str, Any]) -> None:
        """Write ``record`` if it validates as record format v1, else its reject line."""
        try:
            Record.model_validate(record)
        except ValidationError as err:
            where = record.get("id", "?")
            self.reject(str(record.get("id", "")), record.get("kind"), ReasonCode.SCHEMA,
                        f"{self.fmt} {where}: {describe_validation_error(err)}",
                        record.get("source"), record.get("license"))
            return
        self.lines.append(orjson.dumps(record))
        self.counts["records"] += 1

    def reject(self, rid: str, kind: str | None, code: ReasonCode, detail: str,
               source: str | None = None, license: str | None = None) -> None:
        line: dict[str, Any] = {"id": rid, "kind": kind, "source": source or self.source or self.fmt,
                                "license": license or self.license or "unknown",
                                IMPORT_REJECT_FIELD: {"code": str(code), "detail": detail}}
        self.lines.append(orjson.dumps(line))
        self.counts[str(code)] += 1

    def reject_problem(self, rid: str, kind: str | None, problem: ImportProblem) -> None:
        self.reject(rid, kind, problem.code, problem.detail)

    def save(self) -> str:
        """Write the manifest (JSONL, UTF-8, one line per input sample); returns a summary."""
        if not self.lines:
            raise UserError(f"import {self.fmt}: the input holds no samples")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_bytes(b"\n".join(self.lines) + b"\n")
        tmp.replace(self.out)
        rejected = sum(n for k, n in self.counts.items() if k != "records")
        parts = [f"{self.out}: {len(self.lines)} line(s), {self.counts['records']} record(s), {rejected} rejected"]
        parts += [f"  {code:32s}{n:>8d}" for code, n in sorted(self.counts.items()) if code != "records"]
        parts += [f"note: {note}" for note in self.notes]
        return "\n".join(parts)


def existing_file(base: Path, name: object, where: str) -> Path:
    """``base/name`` when it is a file; a MEDIA problem naming ``where`` otherwise."""
    if not isinstance(name, str) or not name:
        raise schema_problem(f"{where}: the file name is {name!r}, not a path")
    path = base / name
    if not path.is_file():
        raise media_problem(f"{where}: {name!r} not found under {base}")
    return path


def box_numbers(bbox: object, where: str) -> list[float]:
    """Four finite numbers, or a SCHEMA problem naming ``where`` and what is wrong."""
    if not isinstance(bbox, list | tuple):
        raise schema_problem(f"{where}: bbox is {type(bbox).__name__}, not a list of 4 numbers")
    if len(bbox) != 4:
        raise schema_problem(f"{where}: bbox has {len(bbox)} numbers, not 4")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        raise schema_problem(f"{where}: bbox holds a value that is not a number: {list(bbox)!r}")
    return [float(v) for v in bbox]
