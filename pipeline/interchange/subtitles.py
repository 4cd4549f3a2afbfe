"""SRT and WebVTT subtitles -> cues in integer microseconds.

A strict reader: every cue must have a well-formed timing line (``HH:MM:SS,mmm --> HH:MM:SS,mmm``
in SRT, ``[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm [settings]`` in WebVTT) and an end after its start;
anything else raises :class:`SubtitleError` naming the file and line, which the video importer
turns into a SCHEMA reject. Lenient readers skip such cues silently, and a skipped cue is a
shifted transcript. Cue text keeps its words and loses its markup (``<i>``, ``{\\an8}``, VTT
voice and class tags); ``NOTE``, ``STYLE`` and ``REGION`` blocks are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

US = 1_000_000
_SRT_TIME = r"(\d{1,3}):([0-5]\d):([0-5]\d)[,.](\d{3})"
_VTT_TIME = r"(?:(\d{1,3}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s+.*)?$")
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TIME}\s+-->\s+{_VTT_TIME}(?:\s+.*)?$")
_TAG_RE = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")


class SubtitleError(ValueError):
    """A subtitle file that cannot be read exactly (file:line and what is wrong)."""


@dataclass(frozen=True)
class Cue:
    start_us: int
    duration_us: int
    text: str

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


def _us(h: str | None, m: str, s: str, ms: str) -> int:
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * US + int(ms) * 1000


def _clean(lines: list[str]) -> str:
    return " ".join(" ".join(_TAG_RE.sub("", line) for line in lines).split())


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each blank-line-separated block."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not current:
                start = lineno
            current.append(line.rstrip())
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _cue(name: str, lineno: int, match: re.Match[str] | None, line: str, lines: list[str], vtt: bool) -> Cue:
    if match is None:
        raise SubtitleError(f"{name}:{lineno}: not a timing line: {line.strip()[:80]!r}")
    g = match.groups()
    start, end = (_us(*g[0:4]), _us(*g[4:8]))
    if end <= start:
        raise SubtitleError(f"{name}:{lineno}: the cue ends at or before it starts ({line.strip()})")
    return Cue(start, end - start, _clean(lines))


def parse_srt(text: str, name: str = "subtitles.srt") -> list[Cue]:
    cues = []
    for lineno, lines in _blocks(text.lstrip("\ufeff")):
        timing_at = 1 if lines[0].strip().isdigit() and len(lines) > 1 else 0
        line = lines[timing_at]
        cues.append(_cue(name, lineno + timing_at, _SRT_TIMING.match(line), line, lines[timing_at + 1:], False))
    return cues


def parse_vtt(text: str, name: str = "subtitles.vtt") -> list[Cue]:
    blocks = _blocks(text.lstrip("\ufeff"))
    if not blocks or not re.match(r"^WEBVTT(?:[ \t].*)?$", blocks[0][1][0]):
        raise SubtitleError(f"{name}:1: a WebVTT file starts with 'WEBVTT'")
    cues = []
    for lineno, lines in blocks[1:]:
        if re.match(r"^(NOTE|STYLE|REGION)(?:\s|$)", lines[0]):
            continue
        timing_at = 0 if "-->" in lines[0] else 1  # an optional cue identifier line
        if timing_at >= len(lines):
            raise SubtitleError(f"{name}:{lineno}: a cue identifier without a timing line")
        line = lines[timing_at]
        cues.append(_cue(name, lineno + timing_at, _VTT_TIMING.match(line), line, lines[timing_at + 1:], True))
    return cues


def read_subtitles(path: Path) -> list[Cue]:
    """Cues of an ``.srt`` or ``.vtt`` file; :class:`SubtitleError` when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SubtitleError(f"{path.name}: not UTF-8 (byte {err.start})") from None
    if path.suffix.lower() == ".vtt":
        return parse_vtt(text, path.name)
    return parse_srt(text, path.name)
