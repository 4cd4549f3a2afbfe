"""Ingest: JSONL and Parquet manifests (local or s3://) into ROW_SCHEMA tables.

Every input line or row becomes exactly one output row. A record that does not parse or does
not validate becomes a rejected row (``ERR_CROSS_MDL_SCHEMA``, stage ``ingest``) whose detail
names the line and the field; its id is salvaged from the raw text where possible so that the
rejection can be traced. Nothing here raises on bad records.

Limits, each a rejection rather than an exception: ``max_record_bytes`` per line, JSON nesting
deeper than ``max_depth``, duplicate keys and lone surrogates (``json_record``), numbers out of
their Arrow type's range or non-finite where they must be finite (``schemas.records``). A
Parquet manifest is read a row group at a time (``parquet_records``): a corrupt row group
rejects its own rows, as many as the footer gives it. A row that still cannot become an Arrow
row is rejected naming the column, so a manifest always comes back one row per record.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from access.io import filesystem_for, parent_uri, read_bytes
from access.paths import MediaPathError, MediaPolicy
from pipeline.run.json_record import DEFAULT_MAX_NESTING_DEPTH, RecordError, parse_json_record
from pipeline.run.parquet_records import iter_parquet_records, parquet_record_count
from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA, STATUS_OK, STATUS_REJECTED, Record

INGEST_STAGE = "ingest"
# A line an importer wrote for an input sample it could not map (``pipeline.interchange``):
# ``{"id", "kind", ..., "import_reject": {"code": SCHEMA|MEDIA, "detail": ...}}`` becomes a row
# rejected at stage ``import`` with that code and detail. Any other ``import_reject`` object (a
# missing detail, another code, more keys) is a SCHEMA reject at ``ingest`` naming the field.
IMPORT_REJECT_FIELD = "import_reject"
IMPORT_STAGE = "import"
_IMPORT_CODES = (str(ReasonCode.SCHEMA), str(ReasonCode.MEDIA))
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


def _storable(text: str) -> str:
    """``text`` as valid UTF-8 (a detail may quote a key holding a lone surrogate)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
        "reject_detail": _storable(detail[:1000]),
        "manifest_root": _storable(root),
        "source_ref": _storable(where),
    }


def _validated_row(obj: object, raw: bytes, where: str, root: str, fallback_id: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return _rejected_row(
            raw, where, f"{where}: record is a JSON {type(obj).__name__}, not an object", root, fallback_id
        )
    marker = obj.get(IMPORT_REJECT_FIELD)
    if isinstance(marker, dict):
        code, detail = marker.get("code"), marker.get("detail")
        if set(marker) != {"code", "detail"} or code not in _IMPORT_CODES or not isinstance(detail, str) or not detail:
            return _rejected_row(raw, where, f"{where}: {IMPORT_REJECT_FIELD}: not an importer's reject "
                                 f'(expected {{"code": SCHEMA or MEDIA, "detail": text}})', root, fallback_id)
        return _rejected_row(raw, where, f"{where}: {detail}", root, fallback_id, ReasonCode(code), IMPORT_STAGE)
    try:
        record = Record.model_validate(obj)
    except ValidationError as err:
        return _rejected_row(raw, where, f"{where}: {describe_validation_error(err)}", root, fallback_id)
    except RecursionError:  # unreachable after the depth limits; a reject all the same
        return _rejected_row(raw, where, f"{where}: record nested too deep to validate", root, fallback_id)
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
    data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
    max_depth: int = DEFAULT_MAX_NESTING_DEPTH, first_line: int = 1,
) -> Iterator[dict[str, Any]]:
    """Rows of JSON lines; ``data`` may be a range of a file that starts at line ``first_line``."""
    root = parent_uri(uri)
    for lineno, raw in enumerate(data.split(b"\n"), start=first_line):
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
            obj = parse_json_record(raw, text, max_depth)
        except RecordError as err:
            yield _rejected_row(raw, where, f"{where}: {err.detail}", root, fallback_id)
            continue
        yield _validated_row(obj, raw, where, root, fallback_id)


def iter_parquet_rows(
    data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
    max_depth: int = DEFAULT_MAX_NESTING_DEPTH,
) -> Iterator[dict[str, Any]]:
    """Rows are numbered from 0; ``max_record_bytes`` is not applied (a row group is read whole)."""
    root = parent_uri(uri)
    for rowno, obj, why in iter_parquet_records(data, max_depth):
        where = f"{uri}:{rowno}"
        if obj is None:
            yield _rejected_row(b"", where, f"{where}: {why}", root, f"@row:{rowno}")
            continue
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


_ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError)


def _unstorable_column(row: dict[str, Any]) -> str:
    for field in ROW_SCHEMA:
        try:
            pa.array([row.get(field.name)], type=field.type)
        except _ARROW_ERRORS as err:
            return f"{field.name}: value does not fit the row schema ({type(err).__name__}: {err})"
    return "record does not fit the row schema"


def _rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a ROW_SCHEMA table; a row Arrow cannot hold (a case the validation missed)
    becomes a rejected row naming the column instead of failing the whole manifest."""
    try:
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    except _ARROW_ERRORS:
        pass
    pieces = []
    for row in rows:
        try:
            pieces.append(pa.Table.from_pylist([row], schema=ROW_SCHEMA))
        except _ARROW_ERRORS:
            where = _storable(str(row.get("source_ref")))
            bad = _rejected_row(b"", where, f"{where}: {_unstorable_column(row)}", str(row.get("manifest_root")), "")
            bad.update(id=_storable(str(row.get("id"))), kind=row.get("kind") if isinstance(row.get("kind"), str)
                       else None)
            pieces.append(pa.Table.from_pylist([bad], schema=ROW_SCHEMA))
    return pa.concat_tables(pieces)


def parse_manifest_bytes(data: bytes, uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
                         media_roots: Sequence[str] = (), max_depth: int = DEFAULT_MAX_NESTING_DEPTH,
                         first_line: int = 1) -> pa.Table:
    """Parse one manifest file's bytes (``.parquet`` or JSON lines) into a ROW_SCHEMA table;
    media refs resolve under the manifest's folder and ``media_roots``. JSON lines may be a
    range of the file that starts at line ``first_line`` (``pipeline.run.blocks``)."""
    policy = MediaPolicy.for_root(parent_uri(uri), media_roots)
    if uri.endswith(".parquet"):
        rows_in = iter_parquet_rows(data, uri, max_record_bytes, max_depth=max_depth)
    else:
        rows_in = iter_jsonl_rows(data, uri, max_record_bytes, max_depth=max_depth, first_line=first_line)
    rows = list(mark_duplicates(resolve_media(rows_in, policy)))
    for row in rows:
        for box in row.get("boxes") or []:
            box["bbox"] = [float(v) if v is not None else math.nan for v in box["bbox"]]
    return _rows_to_table(rows)


def read_manifest(uri: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, *,
                  media_roots: Sequence[str] = (), max_depth: int = DEFAULT_MAX_NESTING_DEPTH) -> pa.Table:
    """Read a manifest from a path, ``file://`` or ``s3://`` URI. A missing manifest raises
    ``FileNotFoundError`` (the run cannot start); bad records inside it never raise."""
    return parse_manifest_bytes(read_bytes(uri), uri, max_record_bytes, media_roots=media_roots,
                                max_depth=max_depth)


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
    :func:`read_manifest` produces for it, which is what the release reconciles against. A
    JSON-lines manifest is streamed (the driver never holds it); a Parquet one is counted by its
    footer."""
    import hashlib

    if uri.endswith(".parquet"):
        data = read_bytes(uri)
        # by the footer, unreadable row groups included
        return len(data), hashlib.sha256(data).hexdigest(), parquet_record_count(data)
    fs, path = filesystem_for(uri)
    digest, size, records, pending = hashlib.sha256(), 0, 0, False  # pending: the open line has text
    with fs.open_input_stream(path) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            *ended, last = chunk.split(b"\n")
            for part in ended:
                records += pending or bool(part.strip())
                pending = False
            pending = pending or bool(last.strip())
    return size, digest.hexdigest(), records + pending
