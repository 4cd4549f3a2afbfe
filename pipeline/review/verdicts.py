"""Verdicts: one JSON object per line, as the review page writes them.

A verdict says whether one reviewer agrees with the release's decision about one row (``check``
is ``kept`` or the reason code that rejected it); disagreeing with a kept row may name the code it
should have had. A reviewer who clicks twice on the same row means the later click: per
(reviewer, row) the latest ``at`` wins, and among equal times the later line.

Example line::

    {"format": "xmodal-review-verdict/1", "dataset": "sample-world", "version": "demo", "seed": 0,
     "key": "rejects/media_check/ERR_CROSS_MDL_MEDIA/part-00000.parquet#0", "id": "doc-00009",
     "kind": "document", "check": "ERR_CROSS_MDL_MEDIA", "stratum": "reject:ERR_CROSS_MDL_MEDIA",
     "verdict": "agree", "code": null, "reviewer": "ana", "note": "", "at": "2026-01-05T10:00:00.000Z"}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import UserError
from pipeline.review.release_rows import split_key
from schemas.reason_codes import ReasonCode

VERDICT_FORMAT = "xmodal-review-verdict/1"
MAX_LINE_BYTES = 64 << 10


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["xmodal-review-verdict/1"]
    dataset: str = Field(min_length=1)
    version: str = Field(min_length=1)
    seed: int | None = None
    key: str
    id: str | None = None
    kind: str | None = None
    check: str
    stratum: str | None = None
    verdict: Literal["agree", "disagree"]
    code: ReasonCode | None = None
    reviewer: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)
    at: str

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        split_key(key)
        return key

    @field_validator("check")
    @classmethod
    def _check(cls, check: str) -> str:
        if check != "kept" and check not in {c.value for c in ReasonCode}:
            raise ValueError(f"must be 'kept' or a reason code, got {check!r}")
        return check

    @field_validator("reviewer")
    @classmethod
    def _reviewer(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("is blank")
        return name.strip()

    @field_validator("at")
    @classmethod
    def _at(cls, at: str) -> str:
        datetime.fromisoformat(at.replace("Z", "+00:00"))
        return at

    def sort_time(self) -> datetime:
        t = datetime.fromisoformat(self.at.replace("Z", "+00:00"))
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def describe(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(line)"
    return f"field {field}: {first['msg']}"


def parse_line(text: str, where: str) -> Verdict:
    """One verdict; UserError naming ``where`` (file:line) and the field on anything else."""
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise UserError(f"{where}: not JSON ({err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a verdict is a JSON object, got {type(raw).__name__}")
    try:
        return Verdict.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{where}: {describe(err)}") from None


def parse_lines(lines: Iterable[str], source: str) -> list[tuple[str, Verdict]]:
    """``(file:line, verdict)`` of each non-blank line."""
    out = []
    for n, line in enumerate(lines, 1):
        where = f"{source}:{n}"
        if len(line.encode()) > MAX_LINE_BYTES:
            raise UserError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
        if line.strip():
            out.append((where, parse_line(line, where)))
    return out


def read_verdicts(paths: Sequence[str | Path]) -> list[tuple[str, Verdict]]:
    """Every verdict of the files with its file:line, in file and line order."""
    out: list[tuple[str, Verdict]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"{path}: no such verdicts file") from None
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
        out.extend(parse_lines(text.splitlines(), str(path)))
    return out


def latest(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The latest verdict of each (reviewer, row), oldest first."""
    best: dict[tuple[str, str], tuple[datetime, int, Verdict]] = {}
    for i, v in enumerate(verdicts):
        k = (v.reviewer, v.key)
        t = v.sort_time()
        if k not in best or (t, i) >= best[k][:2]:
            best[k] = (t, i, v)
    return [v for _, _, v in sorted(best.values(), key=lambda x: (x[0], x[1]))]


def jsonl(verdicts: Iterable[Verdict]) -> str:
    return "".join(json.dumps(v.model_dump(mode="json"), ensure_ascii=False) + "\n" for v in verdicts)
