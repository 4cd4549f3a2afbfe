"""``xmodal review merge``: verdicts -> a review table beside the release, the agreement figures,
the report with a review section, and the review gates.

Everything goes to ``<dataset>/_reviews/<version>/`` (local or ``s3://``); the release's shards,
manifest and report are never written. Each verdict is checked against the release first: its
dataset and version, that its shard and row exist, that the row has the id the page showed and
that the release decided what the verdict says it decided. Verdicts merged earlier are kept
(``verdicts.jsonl`` there), so reviewers' files can be merged one at a time.

Files: ``review.parquet`` (one row per judged row: key, shard, row, id, kind, group, check,
reject_stage, review_status, outcome, agree, disagree, reviewers, notes, missed_code),
``agreement.json`` (figures and gate results), ``verdicts.jsonl`` and ``report.html``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from access.io import read_bytes, write_bytes
from pipeline.errors import UserError
from pipeline.release.gates import GateResult
from pipeline.review.agreement import RowReview, agreement, row_reviews
from pipeline.review.gates import ReviewGates, evaluate_review_gates
from pipeline.review.release_rows import Release, rows_at, split_key
from pipeline.review.report_section import review_section, with_section
from pipeline.review.verdicts import Verdict, jsonl, latest, parse_lines

REVIEWS_DIR = "_reviews"
AGREEMENT_FORMAT = "xmodal-review-agreement/1"

REVIEW_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("row", pa.int64()), ("id", pa.string()),
    ("kind", pa.string()), ("group", pa.string()), ("check", pa.string()), ("reject_stage", pa.string()),
    ("review_status", pa.string()), ("outcome", pa.string()), ("agree", pa.int32()), ("disagree", pa.int32()),
    ("reviewers", pa.list_(pa.string())), ("notes", pa.list_(pa.string())), ("missed_code", pa.string()),
])


class ReviewGateError(UserError):
    """A review gate failed; the review table and report were still written."""


@dataclass(frozen=True)
class MergeResult:
    uri: str
    rows: list[RowReview]
    figures: dict[str, Any]
    gates: list[GateResult]


def review_uri(release: Release) -> str:
    return f"{release.dataset_uri}/{REVIEWS_DIR}/{release.version}"


def _earlier(uri: str) -> list[tuple[str, Verdict]]:
    try:
        text = read_bytes(f"{uri}/verdicts.jsonl").decode("utf-8")
    except FileNotFoundError:
        return []
    return parse_lines(text.splitlines(), f"{uri}/verdicts.jsonl")


def verify(release: Release, verdicts: Sequence[tuple[str, Verdict]]) -> dict[str, tuple[str, str | None]]:
    """Check each verdict against the release; ``key -> (group, reject stage)`` of every row."""
    by_shard: dict[str, list[tuple[str, Verdict, int]]] = {}
    for where, v in verdicts:
        if (v.dataset, v.version) != (release.dataset, release.version):
            raise UserError(f"{where}: verdict for {v.dataset}/{v.version}, but the release is "
                            f"{release.dataset}/{release.version}")
        path, row = split_key(v.key)
        by_shard.setdefault(path, []).append((where, v, row))
    groups: dict[str, tuple[str, str | None]] = {}
    for path, items in by_shard.items():
        shard = release.shard(path)
        if shard is None:
            where = items[0][0]
            raise UserError(f"{where}: field key: the release has no shard {path}")
        found = rows_at(release, shard, [row for _, _, row in items], ["id"])
        decided = "kept" if shard.group != "rejects" else str(shard.code)
        for where, v, row in items:
            if row not in found:
                raise UserError(f"{where}: field key: {path} has {shard.rows} rows, no row {row}")
            if v.id is not None and found[row].get("id") != v.id:
                raise UserError(f"{where}: field id: row {v.key} is {found[row].get('id')!r}, not {v.id!r}")
            if v.check != decided:
                raise UserError(f"{where}: field check: the release decided {decided} for {v.key}, not {v.check}")
        group = shard.kind if shard.group == "data" else shard.group  # negatives and rejects apart
        for _, v, _ in items:
            groups[v.key] = (group, shard.stage)
    return groups


def _table(rows: Sequence[RowReview]) -> pa.Table:
    records = []
    for r in rows:
        shard, row = split_key(r.key)
        records.append({"key": r.key, "shard": shard, "row": row, "id": r.id, "kind": r.kind, "group": r.group,
                        "check": r.check, "reject_stage": r.stage, "review_status": r.review_status,
                        "outcome": r.outcome, "agree": r.agree, "disagree": r.disagree,
                        "reviewers": sorted(set(r.reviewers)), "notes": r.notes,
                        "missed_code": r.missed_code if r.check == "kept" and r.outcome == "disagree" else None})
    return pa.Table.from_pylist(records, schema=REVIEW_SCHEMA)


def _put(uri: str, data: bytes) -> None:
    """One small object; on S3 one PUT through boto3 with retries, as the release writes them."""
    if not uri.startswith("s3://"):
        write_bytes(uri, data)
        return
    from pipeline.release.s3 import Publisher, UploadSettings, s3_client, split_s3_uri

    bucket, key = split_s3_uri(uri)
    Publisher(s3_client(), bucket, UploadSettings()).put(key, data)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def merge_verdicts(release: Release, new: Sequence[tuple[str, Verdict]], gates: ReviewGates | None = None,
                   out_uri: str | None = None) -> MergeResult:
    """Merge ``new`` verdicts (with earlier ones) into the review of ``release``; raises
    :class:`ReviewGateError` after writing when a gate fails."""
    uri = (out_uri or review_uri(release)).rstrip("/")
    if not new:
        raise UserError("no verdict to merge (the files are empty)")
    everything = _earlier(uri) + list(new)
    groups = verify(release, everything)
    seen: set[str] = set()
    unique = []
    for _, v in everything:
        line = json.dumps(v.model_dump(mode="json"), sort_keys=True)
        if line not in seen:
            seen.add(line)
            unique.append(v)
    current = latest(unique)
    rows = row_reviews(current, groups)
    figures = agreement(rows, len(current))
    results = evaluate_review_gates(gates, figures) if gates is not None and gates.any() else []
    summary = {"format": AGREEMENT_FORMAT, "dataset": release.dataset, "version": release.version,
               "release": release.uri, "config_hash": release.manifest.get("config_hash"), **figures,
               "gates": [g.to_json() for g in results]}
    try:
        report = read_bytes(f"{release.uri}/report/index.html").decode("utf-8")
    except FileNotFoundError:
        report = None
    title = f"{release.dataset} {release.version}: human review"
    _put(f"{uri}/verdicts.jsonl", jsonl(sorted(unique, key=lambda v: v.sort_time())).encode())
    _put(f"{uri}/review.parquet", _parquet(_table(rows)))
    _put(f"{uri}/report.html", with_section(report, review_section(figures, results, rows), title,
                                                   release.version).encode())
    _put(f"{uri}/agreement.json", (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())
    failed = [g for g in results if not g.passed]
    if failed:
        raise ReviewGateError(f"{len(failed)} of {len(results)} review gate(s) failed: "
                              + "; ".join(g.detail for g in failed) + f" (report: {uri}/report.html)")
    return MergeResult(uri, rows, figures, results)
