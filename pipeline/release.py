"""Release: kept rows -> data/jsonl shards, rejects by stage and code, report, manifest last.

Layout (DESIGN.md): ``<root>/<dataset>/<version>/{data,jsonl,rejects,report}/...`` and
``manifest.json``, the commit marker, written last. On a local disk the whole version is built in
a hidden sibling directory and renamed into place, so a reader never sees half a release; on S3
the shards go first, ``manifest.json`` after them, then the ``latest`` pointer. A release whose
lint fails or whose counts do not reconcile is not published.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import filesystem_for, resolve_media_uri
from pipeline.shards import ShardInfo, encode_jsonl, encode_parquet, sha256_hex, shard_name, split_by_size
from schemas.placeholders import PlaceholderLinter
from schemas.records import RECORD_FORMAT_VERSION, STATUS_OK

MANIFEST_FORMAT = "xmodal-release/1"
INTERNAL_COLUMNS = ("status", "reject_stage", "reject_code", "reject_detail", "manifest_root")


class ReleaseError(RuntimeError):
    """The release cannot be published (exists, lint failed, counts do not reconcile)."""


@dataclass(frozen=True)
class InputFingerprint:
    uri: str
    bytes: int
    sha256: str
    records: int


@dataclass
class ReleaseResult:
    uri: str
    manifest: dict[str, Any]
    shards: list[ShardInfo] = field(default_factory=list)


def _resolve_media(table: pa.Table) -> pa.Table:
    """Make media URIs absolute so that shards do not depend on where the manifest was."""
    roots = table["manifest_root"].to_pylist()
    media = table["media"].to_pylist()
    for i, refs in enumerate(media):
        for ref in refs or []:
            ref["uri"] = resolve_media_uri(ref["uri"], roots[i])
    idx = table.schema.get_field_index("media")
    return table.set_column(idx, table.schema.field(idx), pa.array(media, table.schema.field(idx).type))


def reconcile(table: pa.Table, input_records: int) -> dict[str, Any]:
    """Counts for the manifest; raises ReleaseError unless ``input == ok + rejected`` on rows
    without a parent (fan-out rows are counted apart)."""
    roots = table.filter(pc.is_null(table["parent_id"]))
    status = Counter(roots["status"].to_pylist())
    kept, rejected = status.get(STATUS_OK, 0), roots.num_rows - status.get(STATUS_OK, 0)
    if roots.num_rows != input_records or kept + rejected != input_records:
        raise ReleaseError(
            f"counts do not reconcile: {input_records} input records, {roots.num_rows} rows "
            f"without parent ({kept} kept + {rejected} rejected)"
        )
    rej = table.filter(pc.not_equal(table["status"], STATUS_OK))
    by_code = Counter(rej["reject_code"].to_pylist())
    by_stage_code = Counter(f"{s}/{c}" for s, c in zip(rej["reject_stage"].to_pylist(), rej["reject_code"].to_pylist(), strict=True))
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    return {
        "input_records": input_records,
        "kept": kept,
        "rejected": rejected,
        "derived_kept": ok.num_rows - kept,
        "derived_rejected": rej.num_rows - rejected,
        "kept_by_kind": dict(sorted(Counter(ok["kind"].to_pylist()).items())),
        "rejected_by_code": dict(sorted(by_code.items())),
        "rejected_by_stage_code": dict(sorted(by_stage_code.items())),
    }


def lint_kept(table: pa.Table, vocab: Mapping[str, int]) -> list[str]:
    verdicts = PlaceholderLinter(vocab).check_columns(table["content"], table["media"], table["kind"])
    ids = table["id"].to_pylist()
    return [f"{ids[i]}: {v.rule}: {v.detail}" for i, v in enumerate(verdicts) if v is not None]


class _Destination:
    """Where the version's files go: a hidden local directory renamed at the end, or S3 keys."""

    def __init__(self, root: str, dataset: str, version: str, overwrite: bool) -> None:
        self.final_uri = f"{root.rstrip('/')}/{dataset}/{version}"
        self.fs, self.final_path = filesystem_for(self.final_uri)
        self.local = not self.final_uri.startswith("s3://")
        self.dataset_path = os.path.dirname(self.final_path)
        exists = self.fs.get_file_info(f"{self.final_path}/manifest.json").is_file
        if exists and not overwrite:
            raise ReleaseError(f"{self.final_uri} already exists (set release.overwrite to replace it)")
        if self.local:
            self.work_path = f"{self.dataset_path}/.{version}.tmp-{uuid.uuid4().hex[:8]}"
        else:
            self.work_path = self.final_path
        self.fs.create_dir(self.work_path, recursive=True)

    def put(self, rel: str, data: bytes) -> None:
        path = f"{self.work_path}/{rel}"
        self.fs.create_dir(os.path.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def commit(self, manifest: bytes, version: str) -> None:
        self.put("manifest.json", manifest)  # last: the commit marker
        if self.local:
            if os.path.exists(self.final_path):
                trash = f"{self.final_path}.old-{uuid.uuid4().hex[:8]}"
                os.rename(self.final_path, trash)
                os.rename(self.work_path, self.final_path)
                shutil.rmtree(trash)
            else:
                os.rename(self.work_path, self.final_path)
            tmp_latest = f"{self.dataset_path}/.latest.tmp"
            with open(tmp_latest, "w") as fh:
                fh.write(version + "\n")
            os.replace(tmp_latest, f"{self.dataset_path}/latest")
        else:
            with self.fs.open_output_stream(f"{self.dataset_path}/latest") as out:
                out.write((version + "\n").encode())

    def abort(self) -> None:
        if self.local and os.path.isdir(self.work_path):
            shutil.rmtree(self.work_path, ignore_errors=True)


def write_release(
    table: pa.Table,
    *,
    root: str,
    dataset: str,
    version: str,
    inputs: Sequence[InputFingerprint],
    config_hash: str,
    code_version: str,
    vocab: Mapping[str, int],
    shard_target_bytes: int = 100_000_000,
    jsonl: bool = True,
    overwrite: bool = False,
    report_html: str | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> ReleaseResult:
    """Write one release version; see the module docstring for the guarantees."""
    counts = reconcile(table, sum(i.records for i in inputs))
    table = table.sort_by([("kind", "ascending"), ("id", "ascending")])
    kept = table.filter(pc.equal(table["status"], STATUS_OK))
    rejected = table.filter(pc.not_equal(table["status"], STATUS_OK))
    problems = lint_kept(kept, vocab)
    if problems:
        raise ReleaseError(f"placeholder lint failed on {len(problems)} kept row(s), first: {problems[0]}")
    kept = _resolve_media(kept).drop_columns(list(INTERNAL_COLUMNS))
    dest = _Destination(root, dataset, version, overwrite)
    shards: list[ShardInfo] = []
    try:
        for kind in sorted(set(kept["kind"].to_pylist())):
            rows = kept.filter(pc.equal(kept["kind"], kind))
            for i, piece in enumerate(split_by_size(rows, shard_target_bytes)):
                encoders = [("data", "parquet", encode_parquet)] + ([("jsonl", "jsonl", encode_jsonl)] if jsonl else [])
                for folder, fmt, encode in encoders:
                    data = encode(piece)
                    rel = f"{folder}/{shard_name(kind, i, fmt)}"
                    dest.put(rel, data)
                    shards.append(ShardInfo(rel, kind, fmt, piece.num_rows, len(data), sha256_hex(data)))
        groups = sorted(set(zip(rejected["reject_stage"].to_pylist(), rejected["reject_code"].to_pylist(), strict=True)))
        for stage, code in groups:
            mask = pc.and_(pc.equal(rejected["reject_stage"], stage), pc.equal(rejected["reject_code"], code))
            for i, piece in enumerate(split_by_size(rejected.filter(mask), shard_target_bytes)):
                data = encode_parquet(piece)
                rel = f"rejects/{stage}/{code}/{shard_name('part', i, 'parquet')}"
                dest.put(rel, data)
                shards.append(ShardInfo(rel, "rejects", "parquet", piece.num_rows, len(data), sha256_hex(data)))
        if report_html is not None:
            dest.put("report/index.html", report_html.encode())
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": dataset,
            "version": version,
            "schema_version": RECORD_FORMAT_VERSION,
            "placeholder_version": "v1",
            "code_version": code_version,
            "config_hash": config_hash,
            "inputs": [i.__dict__ for i in inputs],
            "shards": [s.to_json() for s in shards],
            "counts": counts,
            "metrics": dict(metrics or {}),
            "gates": [],
        }
        encoded = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        dest.commit(encoded, version)
    except BaseException:
        dest.abort()
        raise
    return ReleaseResult(dest.final_uri, manifest, shards)
