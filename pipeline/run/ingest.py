"""Ingest: JSONL and Parquet manifests (local or s3://) into ROW_SCHEMA tables.

Every input line or row becomes exactly one output row. A record that does not parse or does
not validate becomes a rejected row (``ERR_CROSS_MDL_SCHEMA``, stage ``ingest``) whose detail
names the line and the field; its id is salvaged from the raw text where possible so that the
rejection can be traced. Nothing here raises on bad records.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from access.io import parent_uri, read_bytes
from access.paths import MediaPathError, MediaPolicy
from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA, STATUS_OK, STATUS_REJECTED, Record

INGEST_STAGE = "ingest"
# A line an importer wrote for an input sample it could not map (``pipeline.interchange``):
# ``{"id", "kind", ..., "import_reject": {"code": SCHEMA|MEDIA, "detail": ...}}`` becomes a row
# rejected at stage ``import`` with that code and detail.
IMPORT_REJECT_FIELD = "import_reject"
IMPORT_STAGE = "import"
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
_ID_SALVAGE = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_-]{1,128})"')
_KIND_SALVAGE = re.compile(rb'"kind"\s*:\s*"(object|segment|document|text)"')


def describe_validation_error(err: ValidationError, limit: int = 3) -> str:
    """``field.path: message`` for the first errors, e.g. ``content: Input should be a valid string``."""
    parts = []
    for e in err.errors()[:limit]:
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        parts.append(f"{loc}: {e['msg']}")
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _rejected_row(raw: bytes, where: str, detail: str, root: str, fallback_id: str,
                  code: ReasonCode = ReasonCode.SCHEMA, stage: str = INGEST_STAGE) -> dict[str, Any]:
    head = raw[:4096]
    id_match = _ID_SALVAGE.search(head)
    kind_match = _KIND_SALVAGE.search(head)
    return {
        "id": id_match.group(1).decode() if id_match else fallback_id,
        "kind": kind_match.group(1).decode() if kind_match else None,
        "status": STATUS_REJECTED,
        "reject_stage": stage,
        "reject_code": str(code),
        "reject_detail": detail[:1000],
        "manifest_root": root,
        "source_ref": where,
    }


def _validated_row(obj: object, raw: bytes, where: str, root: str, fallback_id: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return _rejected_row(
            raw, where, f"{where}: record is a JSON {type(obj).__name__}, not an object", root, fallback_id
        )
    marker = obj.get(IMPORT_REJECT_FIELD)
    if isinstance(marker, dict):
        code = ReasonCode.MEDIA if marker.get("code") == ReasonCode.MEDIA else ReasonCode.SCHEMA
        return _rejected_row(raw, where, f"{where}: {marker.get('detail')}", root, fallback_id, code, IMPORT_STAGE)
    try:
        record = Record.model_validate(obj)
    except ValidationError as err:
        return _rejected_row(raw, where, f"{where}: {describe_validation_error(err)}", root, fallback_id)
    row = record.model_dump()
    row.update(
        status=STATUS_OK,
        reject_stage=None,
        reject_code=None,
        reject_detail=None,
        parent_id=None,
        manifest_root=root,
        source_ref=where,
    )
    return row


def iter_jsonl_rows(
    data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[dict[str, Any]]:
    root = parent_uri(uri)
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        where = f"{uri}:{lineno}"
        fallback_id = f"@line:{lineno}"
        if len(raw) > max_record_bytes:
            yield _rejected_row(
                raw,
                where,
                f"{where}: record is {len(raw)} bytes, over the limit of {max_record_bytes}",
                root,
                fallback_id,
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _rejected_row(raw, where, f"{where}: not valid UTF-8 at byte {err.start}", root, fallback_id)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield _rejected_row(
                raw, where, f"{where}: invalid JSON: {err.msg} at column {err.colno}", root, fallback_id
            )
            continue
        yield _validated_row(obj, raw, where, root, fallback_id)


def iter_parquet_rows(
    data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[dict[str, Any]]:
    root = parent_uri(uri)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as err:
        yield _rejected_row(b"", f"{uri}:0", f"{uri}: not a readable Parquet file: {err}", root, "@row:0")
        return
    for rowno, obj in enumerate(table.to_pylist()):
        where = f"{uri}:{rowno}"
        obj = {k: v for k, v in obj.items() if v is not None}  # absent == null in Parquet
        raw = json.dumps(obj, default=str)[:4096].encode()
        yield _validated_row(obj, raw, where, root, f"@row:{rowno}")


def mark_duplicates(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Reject the second and later rows with an id already seen (the first one wins)."""
    first_seen: dict[str, str] = {}
    for row in rows:
        if row["status"] == STATUS_OK:
            where = first_seen.get(row["id"])
            if where is not None:
                row.update(
                    status=STATUS_REJECTED,
                    reject_stage=INGEST_STAGE,
                    reject_code=str(ReasonCode.SCHEMA),
                    reject_detail=f"{row['source_ref']}: duplicate id {row['id']!r} (first at {where})",
                )
            else:
                first_seen[row["id"]] = row["source_ref"]
        yield row


def _resolve_refs(refs: list[dict[str, Any]], policy: MediaPolicy) -> str | None:
    """Resolve every ``uri`` and ``features_path`` in place; the first refusal (and no change)
    when one is outside the allowed roots."""
    resolved: list[tuple[dict[str, Any], str, str]] = []
    for k, ref in enumerate(refs):
        for key in ("uri", "features_path"):
            if ref.get(key) is None:
                continue
            try:
                resolved.append((ref, key, policy.resolve(ref[key])))
            except MediaPathError as err:
                return f"media[{k}].{key} ({ref[key]}): {err}"
    for ref, key, value in resolved:
        ref[key] = value
    return None


def resolve_media(rows: Iterable[dict[str, Any]], policy: MediaPolicy) -> Iterator[dict[str, Any]]:
    """Resolve the media refs of ``ok`` rows through the media policy (``access.paths``): each
    row then carries the URIs the stages open. A row with a ref outside the allowed roots is
    rejected here, ``ERR_CROSS_MDL_MEDIA``, before anything is opened."""
    for row in rows:
        problem = _resolve_refs(row.get("media") or [], policy) if row["status"] == STATUS_OK else None
        if problem:
            row.update(status=STATUS_REJECTED, reject_stage=INGEST_STAGE, reject_code=str(ReasonCode.MEDIA),
                       reject_detail=f"{row['source_ref']}: {problem}"[:1000])
        yield row


def parse_manifest_bytes(data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
                         media_roots: Sequence[str] = ()) -> pa.Table:
    """Parse one manifest file's bytes (``.parquet`` or JSON lines) into a ROW_SCHEMA table;
    media refs resolve under the manifest's folder and ``media_roots``."""
    rows_iter = iter_parquet_rows if uri.endswith(".parquet") else iter_jsonl_rows
    policy = MediaPolicy.for_root(parent_uri(uri), media_roots)
    rows = list(mark_duplicates(resolve_media(rows_iter(data, uri, max_record_bytes), policy)))
    for row in rows:
        for box in row.get("boxes") or []:
            box["bbox"] = [float(v) if v is not None else math.nan for v in box["bbox"]]
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def read_manifest(uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
                  media_roots: Sequence[str] = ()) -> pa.Table:
    """Read a manifest from a path, ``file://`` or ``s3://`` URI. A missing manifest raises
    ``FileNotFoundError`` (the run cannot start); bad records inside it never raise."""
    return parse_manifest_bytes(read_bytes(uri), uri, max_record_bytes, media_roots=media_roots)


def mark_duplicate_ids(table: pa.Table) -> pa.Table:
    """Table-level twin of :func:`mark_duplicates`, for rows read from several manifests or
    several Ray blocks: the first ``ok`` row of an id (in table order) wins."""
    from stages.base import Verdict, reject_rows

    first_seen: dict[str, str] = {}
    verdicts: list[Verdict | None] = []
    for rid, status, ref in zip(
        table["id"].to_pylist(), table["status"].to_pylist(), table["source_ref"].to_pylist(), strict=True
    ):
        if status != STATUS_OK:
            verdicts.append(None)
        elif rid in first_seen:
            verdicts.append(Verdict(ReasonCode.SCHEMA, f"{ref}: duplicate id {rid!r} (first at {first_seen[rid]})"))
        else:
            first_seen[rid] = ref
            verdicts.append(None)
    return reject_rows(table, verdicts, INGEST_STAGE)


def fingerprint_input(uri: str) -> tuple[int, str, int]:
    """``(bytes, sha256, records)`` of one manifest; ``records`` counts exactly the rows that
    :func:`read_manifest` produces for it, which is what the release reconciles against."""
    import hashlib

    data = read_bytes(uri)
    if uri.endswith(".parquet"):
        try:
            records = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            records = 1  # the one rejected row that says the file is unreadable
    else:
        records = sum(1 for line in data.split(b"\n") if line.strip())
    return len(data), hashlib.sha256(data).hexdigest(), records
