"""What may be given where an input manifest is expected, checked before anything is read.

An input manifest is a JSONL file (one record a line) or a Parquet file of input records, a
path or an ``s3://`` URI. Three mistakes are common and cheap to see on a local path, and each
would otherwise end in a traceback or in one ``ERR_CROSS_MDL_SCHEMA`` reject per line: a
directory (the sample world's, or an earlier ``xmodal stage`` output), a release's
``manifest.json`` (the commit marker of a published release, not a list of records), and a JSON
document pretty-printed over many lines. :func:`manifest_problem` names the mistake and what
was expected; missing files and ``s3://`` URIs are left to the reader, which says "not found".
"""

from __future__ import annotations

import json
from pathlib import Path

# A release's manifest.json says ``"format": "xmodal-release/N"`` (pipeline.release.writer).
RELEASE_FORMAT_PREFIX = "xmodal-release/"
_HEAD_BYTES = 4096
_MAX_JSON_BYTES = 64 << 20  # larger .json files are not parsed to find out what they are
EXPECTED = "expected a JSONL or Parquet manifest of input records (e.g. out/sample/manifest.jsonl)"


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError:
        return b""


def is_release_manifest(uri: str) -> bool:
    """Whether ``uri`` is a local ``.json`` file holding a release's manifest."""
    path = _local_path(uri)
    if path is None or path.suffix != ".json" or not path.is_file() or path.stat().st_size > _MAX_JSON_BYTES:
        return False
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("format", "")).startswith(RELEASE_FORMAT_PREFIX)


def manifest_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be an input manifest (one sentence naming it and what was expected),
    or ``None`` when it may be one."""
    path = _local_path(uri)
    if path is None:
        return None
    if path.is_dir():
        inside = [n for n in ("manifest.jsonl", "manifest.parquet", "rows.parquet") if (path / n).is_file()]
        hint = f" (did you mean {str(path / inside[0])!r}?)" if inside else ""
        return f"{uri} is a directory; {EXPECTED}{hint}"
    if uri.endswith(".parquet") or not path.is_file():
        return None
    if is_release_manifest(uri):
        return (f"{uri} is the manifest.json of a release, not an input manifest; {EXPECTED}; "
                f"a release's shards are checked by `xmodal lint {path.parent}`")
    first_line = _head(path).lstrip().split(b"\n", 1)[0].strip()
    if not uri.endswith(".jsonl") and first_line in (b"{", b"["):
        return f"{uri} is one JSON document over several lines, not JSON lines; {EXPECTED}"
    return None
