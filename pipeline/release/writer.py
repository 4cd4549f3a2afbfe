"""Release: kept rows -> data/jsonl shards, rejects by stage and code, report, manifest last.

Layout (DESIGN.md): ``<root>/<dataset>/<version>/{data,jsonl,negatives,rejects,report}/...`` and
``manifest.json``, the commit marker, written last. On a local disk the whole version is built in
a hidden sibling directory and renamed into place, so a reader never sees half a release. An S3
release is built the same way in a local directory, then uploaded by ``pipeline.release.publish``: the
shards first, ``manifest.json`` after them, then the ``latest`` pointer; a failed upload keeps
the local build and can be resumed. A release whose lint fails, whose counts do not reconcile or
whose quality gates fail is not published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from access.io import MediaPathError, filesystem_for, resolve_media_uri, write_bytes
from pipeline.release.shards import ShardInfo, encode_parquet, jsonl_chunks, shard_name, split_by_size
from pipeline.release.versions import LATEST, moves_latest, read_latest
from schemas.placeholders import PlaceholderLinter
from schemas.records import RECORD_FORMAT_VERSION, STATUS_OK

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "xmodal-release/1"
REPORT_PATH = "report/index.html"
FAILED_DIR = "_failed"  # <root>/<dataset>/_failed/<version>/: report of a release that failed its gates
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
    publish: dict[str, Any] | None = None  # upload statistics of an S3 release


def _resolve_media(table: pa.Table) -> pa.Table:
    """Make media URIs absolute so that shards do not depend on where the manifest was."""
    roots = table["manifest_root"].to_pylist()
    ids = table["id"].to_pylist()
    media = table["media"].to_pylist()
    for i, refs in enumerate(media):
        for k, ref in enumerate(refs or []):
            try:
                ref["uri"] = resolve_media_uri(ref["uri"], roots[i])
            except MediaPathError as err:  # only reachable when no media_check stage ran
                raise ReleaseError(f"kept row {ids[i]}: media[{k}] ({ref['uri']}): {err}; "
                                   "add the media_check stage before releasing") from None
    idx = table.schema.get_field_index("media")
    return table.set_column(idx, table.schema.field(idx), pa.array(media, table.schema.field(idx).type))


def reconcile(table: pa.Table, input_records: int) -> dict[str, Any]:
    """Counts for the manifest; raises ReleaseError unless ``input == ok + rejected`` on rows
    without a parent (fan-out rows are counted apart)."""
    table = table.select(["parent_id", "status", "kind", "reject_stage", "reject_code"])  # no row copies
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
    stage_codes = zip(rej["reject_stage"].to_pylist(), rej["reject_code"].to_pylist(), strict=True)
    by_stage_code = Counter(f"{s}/{c}" for s, c in stage_codes)
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    rejected_roots = roots.filter(pc.not_equal(roots["status"], STATUS_OK))
    return {
        "input_records": input_records,
        "kept": kept,
        "rejected": rejected,
        "derived_kept": ok.num_rows - kept,
        "derived_rejected": rej.num_rows - rejected,
        "kept_by_kind": dict(sorted(Counter(ok["kind"].to_pylist()).items())),
        # input records by kind; a record that failed to parse has kind null -> "unknown"
        "rejected_by_kind": dict(sorted(Counter(k or "unknown" for k in rejected_roots["kind"].to_pylist()).items())),
        "rejected_by_code": dict(sorted(by_code.items())),
        "rejected_by_stage_code": dict(sorted(by_stage_code.items())),
    }


def lint_kept(table: pa.Table, vocab: Mapping[str, int]) -> list[str]:
    verdicts = PlaceholderLinter(vocab).check_columns(table["content"], table["media"], table["kind"])
    ids = table["id"].to_pylist()
    return [f"{ids[i]}: {v.rule}: {v.detail}" for i, v in enumerate(verdicts) if v is not None]


NEGATIVE_COLUMNS = (
    "id", "parent_id", "kind", "negative_type", "negative_text", "negative_media", "negative_edit",
    "positive_text", "negative_similarity", "positive_similarity", "negative_verdict", "negative_shift_us",
    "start_us", "duration_us", "subtitles", "content", "media", "source", "license", "source_ref",
)


def _ordered(table: pa.Table, mask: pa.ChunkedArray | pa.Array, keys: Sequence[str],
             computed: Mapping[str, pa.ChunkedArray | pa.Array] | None = None) -> pa.Table:
    """The rows where ``mask`` holds, sorted by ``keys`` (columns of ``table`` or of
    ``computed``, whole-table arrays), with a single copy of the rows: the sort runs on the key
    columns of the selected rows, then the rows are taken once in that order."""
    idx = pc.indices_nonzero(mask)
    key_table = pa.table({k: (computed[k] if computed and k in computed else table[k]).take(idx) for k in keys})
    order = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
    return table.take(idx.take(order))


def _runs(column: pa.ChunkedArray | pa.Array) -> Iterator[tuple[Any, int, int]]:
    """``(value, start, length)`` of each run of equal values of a sorted column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.run_end_encode(array)
    start = 0
    for end, value in zip(encoded.run_ends.to_pylist(), encoded.values.to_pylist(), strict=True):
        yield value, start, end - start
        start = end


def kept_in_release_order(table: pa.Table) -> pa.Table:
    """The kept rows sorted by (is a negative pair, kind, id): each kind's training rows are one
    contiguous slice, and the negative pairs one slice after them (``split_negatives``)."""
    ok = pc.equal(table["status"], STATUS_OK)
    if "negative_type" not in table.schema.names:
        return _ordered(table, ok, ["kind", "id"])
    return _ordered(table, ok, ["is_negative", "kind", "id"], {"is_negative": pc.is_valid(table["negative_type"])})


def split_negatives(kept: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(training rows, negative pairs)`` of ``kept_in_release_order``'s table, as slices.
    Rows with ``negative_type`` set (made by the negatives and segment stages, ``parent_id`` =
    the anchor) go to ``negatives/`` with the columns that describe the pair, not the anchor's
    copied embeddings."""
    pair_columns = [c for c in NEGATIVE_COLUMNS if c in kept.schema.names]
    if "negative_type" not in kept.schema.names:
        return kept, kept.slice(0, 0).select(pair_columns)
    plain = kept.num_rows - pc.sum(pc.is_valid(kept["negative_type"])).as_py()
    return kept.slice(0, plain), kept.slice(plain).select(pair_columns)


def rejected_in_release_order(table: pa.Table) -> pa.Table:
    """The rejected rows sorted by stage, code, kind and id: each reject file's rows are one
    contiguous slice."""
    return _ordered(table, pc.not_equal(table["status"], STATUS_OK), ["reject_stage", "reject_code", "kind", "id"])


def reject_pieces(rejected: pa.Table, shard_target_bytes: int) -> Iterator[tuple[str, pa.Table]]:
    """``(path in the release, rows)`` of every reject file: by stage and code, split at the
    size target; ``rejected`` is ``rejected_in_release_order``'s table."""
    groups = pa.StructArray.from_arrays(
        [rejected["reject_stage"].combine_chunks(), rejected["reject_code"].combine_chunks()], ["stage", "code"])
    for key, start, length in _runs(groups):
        group = rejected.slice(start, length)
        for i, piece in enumerate(split_by_size(group, shard_target_bytes)):
            yield f"rejects/{key['stage']}/{key['code']}/{shard_name('part', i, 'parquet')}", piece


def reject_shard_map(table: pa.Table, shard_target_bytes: int) -> dict[str, str]:
    """Rejected row id -> the reject file it will be written to (for the report's links)."""
    rejected = rejected_in_release_order(table)
    return {row_id: path for path, piece in reject_pieces(rejected, shard_target_bytes)
            for row_id in piece["id"].to_pylist()}


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def release_exists(root: str, dataset: str, version: str) -> bool:
    """Whether ``<root>/<dataset>/<version>`` has a manifest (is a published release)."""
    uri = f"{root.rstrip('/')}/{dataset}/{version}/manifest.json"
    if is_s3(uri):
        from pipeline.release.publish import Publisher, PublishError, UploadSettings, s3_client, split_s3_uri

        bucket, key = split_s3_uri(uri)
        try:
            return Publisher(s3_client(), bucket, UploadSettings()).head(key) is not None
        except PublishError as err:
            raise ReleaseError(f"cannot tell whether {uri} exists: {err}") from err
    fs, path = filesystem_for(uri)
    return bool(fs.get_file_info(path).is_file)


def check_can_release(root: str, dataset: str, version: str, overwrite: bool) -> None:
    """Raise ReleaseError early (before any stage runs) for a version that exists."""
    if not overwrite and release_exists(root, dataset, version):
        raise ReleaseError(f"{root.rstrip('/')}/{dataset}/{version} already exists "
                           "(set release.overwrite to replace it)")


class _LocalDestination:
    """A version built in a hidden sibling directory and renamed into place at commit."""

    def __init__(self, root: str, dataset: str, version: str, overwrite: bool) -> None:
        _, self.final_path = filesystem_for(f"{root.rstrip('/')}/{dataset}/{version}")  # path or file://
        self.dataset_path = os.path.dirname(self.final_path)
        if os.path.isfile(os.path.join(self.final_path, "manifest.json")) and not overwrite:
            raise ReleaseError(f"{self.final_path} already exists (set release.overwrite to replace it)")
        self.work_path = f"{self.dataset_path}/.{version}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(self.work_path)

    def put(self, rel: str, data: bytes | Iterable[bytes]) -> tuple[int, str]:
        """Write ``data`` (bytes, or pieces of it) to ``rel``; returns its size and sha256."""
        path = os.path.join(self.work_path, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(path, "wb") as out:
            for piece in [data] if isinstance(data, bytes) else data:
                out.write(piece)
                digest.update(piece)
                size += len(piece)
        return size, digest.hexdigest()

    def commit(self, manifest: bytes, version: str) -> None:
        self.put("manifest.json", manifest)  # last: the commit marker
        if os.path.exists(self.final_path):
            trash = f"{self.dataset_path}/.{version}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final_path, trash)
            os.rename(self.work_path, self.final_path)
            shutil.rmtree(trash)
        else:
            os.rename(self.work_path, self.final_path)
        current = read_latest(self.dataset_path)
        if not moves_latest(current, version):
            log.info("latest stays on %s: %s is an older dated version", current, version)
            return
        tmp_latest = f"{self.dataset_path}/.latest.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp_latest, "w") as fh:
            fh.write(version + "\n")
        os.replace(tmp_latest, f"{self.dataset_path}/{LATEST}")

    def abort(self) -> None:
        if os.path.isdir(self.work_path):
            shutil.rmtree(self.work_path, ignore_errors=True)


def _s3_publisher(uri: str) -> tuple[Any, str]:
    from pipeline.release.publish import Publisher, UploadSettings, s3_client, split_s3_uri

    bucket, key = split_s3_uri(uri)
    return Publisher(s3_client(), bucket, UploadSettings()), key


def _put(uri: str, data: bytes) -> None:
    """One small object; on S3 through boto3 (one PUT, retried) like every other release write."""
    if is_s3(uri):
        publisher, key = _s3_publisher(uri)
        publisher.put(key, data)
    else:
        write_bytes(uri, data)


def remove_tree(uri: str) -> None:
    """Delete a directory, or every key under an S3 prefix; nothing there is fine."""
    if is_s3(uri):
        publisher, key = _s3_publisher(uri)
        found = publisher.keys_under(key.rstrip("/") + "/")
        if found:
            publisher.delete(found)
    else:
        _, path = filesystem_for(uri)
        shutil.rmtree(path, ignore_errors=True)


def failed_report_uri(root: str, dataset: str, version: str) -> str:
    return f"{root.rstrip('/')}/{dataset}/{FAILED_DIR}/{version}"


def write_failed_report(root: str, dataset: str, version: str, report_html: str,
                        gates: Sequence[Mapping[str, Any]]) -> str:
    """Write the report (and gate results) of a release that failed its gates beside the
    versions, under ``_failed/<version>/``, never inside a published version. Returns its URI."""
    base = failed_report_uri(root, dataset, version)
    _put(f"{base}/gates.json", json.dumps(list(gates), indent=2).encode() + b"\n")
    _put(f"{base}/{REPORT_PATH}", report_html.encode())
    return f"{base}/{REPORT_PATH}"


def _encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


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
    gates: Sequence[Mapping[str, Any]] = (),
    stage_timings: Sequence[tuple[str, int, float]] = (),
    upload: Any = None,
    build_dir: str | None = None,
) -> ReleaseResult:
    """Write one release version; see the module docstring for the guarantees. ``gates`` are
    gate results (``GateResult.to_json()``): any failed one refuses the release. For an ``s3://``
    root, ``upload`` (``pipeline.release.publish.UploadSettings``) and ``build_dir`` set the upload."""
    bad = [g for g in gates if not g.get("passed")]
    if bad:
        raise ReleaseError(f"{len(bad)} quality gate(s) failed, first: {bad[0].get('detail')}")
    if is_s3(root):
        return _write_s3_release(table, root=root, dataset=dataset, version=version, inputs=inputs,
                                 config_hash=config_hash, code_version=code_version, vocab=vocab,
                                 shard_target_bytes=shard_target_bytes, jsonl=jsonl,
                                 overwrite=overwrite, report_html=report_html, metrics=metrics,
                                 gates=gates, stage_timings=stage_timings, upload=upload,
                                 build_dir=build_dir)
    counts = reconcile(table, sum(i.records for i in inputs))
    # One sorted copy of the kept rows and one of the rejected ones; every shard is a slice of
    # them, and a JSONL shard is encoded a piece at a time as it is written.
    kept = kept_in_release_order(table)
    problems = lint_kept(kept, vocab)
    if problems:
        raise ReleaseError(f"placeholder lint failed on {len(problems)} kept row(s), first: {problems[0]}")
    kept, negatives = split_negatives(_resolve_media(kept).drop_columns(list(INTERNAL_COLUMNS)))
    rejected = rejected_in_release_order(table)
    dest = _LocalDestination(root, dataset, version, overwrite)
    shards: list[ShardInfo] = []

    def put_shard(rel: str, kind: str, fmt: str, rows: int, data: bytes | Iterable[bytes]) -> None:
        size, digest = dest.put(rel, data)
        shards.append(ShardInfo(rel, kind, fmt, rows, size, digest))

    try:
        for i, piece in enumerate(split_by_size(negatives, shard_target_bytes)):
            put_shard(f"negatives/{shard_name('pairs', i, 'parquet')}", "negatives", "parquet", piece.num_rows,
                      encode_parquet(piece))
        for kind, start, length in _runs(kept["kind"]):
            for i, piece in enumerate(split_by_size(kept.slice(start, length), shard_target_bytes)):
                put_shard(f"data/{shard_name(kind, i, 'parquet')}", kind, "parquet", piece.num_rows,
                          encode_parquet(piece))
                if jsonl:
                    put_shard(f"jsonl/{shard_name(kind, i, 'jsonl')}", kind, "jsonl", piece.num_rows,
                              jsonl_chunks(piece))
        for rel, piece in reject_pieces(rejected, shard_target_bytes):
            put_shard(rel, "rejects", "parquet", piece.num_rows, encode_parquet(piece))
        report = None
        if report_html is not None:
            size, digest = dest.put(REPORT_PATH, report_html.encode())
            report = {"path": REPORT_PATH, "bytes": size, "sha256": digest}
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": dataset,
            "version": version,
            "schema_version": RECORD_FORMAT_VERSION,
            "placeholder_version": "v1",
            # the token vocabulary the lint checked; the training loader checks with the same one
            "placeholder_vocab": dict(sorted(vocab.items())),
            "code_version": code_version,
            "config_hash": config_hash,
            "inputs": [i.__dict__ for i in inputs],
            "shards": [s.to_json() for s in shards],
            "counts": counts,
            "metrics": dict(metrics or {}),
            "gates": [dict(g) for g in gates],
            "report": report,
            "stage_timings": [{"stage": n, "rows_in": r, "seconds": round(sec, 4)} for n, r, sec in stage_timings],
        }
        dest.commit(_encode_manifest(manifest), version)
    except BaseException:
        dest.abort()
        raise
    return ReleaseResult(dest.final_path, manifest, shards)


def _write_s3_release(table: pa.Table, *, root: str, dataset: str, version: str, overwrite: bool,
                      upload: Any, build_dir: str | None, **kwargs: Any) -> ReleaseResult:
    """Build locally, then upload; the local build is removed after a complete upload and kept
    (its path is in the error) after a failed one, so that the upload can be resumed."""
    from pipeline.release.publish import PublishError, UploadSettings, publish_directory

    check_can_release(root, dataset, version, overwrite)
    local_root = build_dir or os.path.join(tempfile.gettempdir(), "xmodal-build")
    built = write_release(table, root=local_root, dataset=dataset, version=version, overwrite=True,
                          **kwargs)
    uri = f"{root.rstrip('/')}/{dataset}/{version}"
    try:
        stats = publish_directory(built.uri, uri, overwrite=overwrite, settings=upload or UploadSettings())
    except PublishError as err:
        raise ReleaseError(f"upload to {uri} did not finish: {err}\nThe built release is kept at "
                           f"{built.uri}; finish the upload with: xmodal publish {built.uri} {uri}"
                           f"{' --overwrite' if overwrite else ''}") from err
    shutil.rmtree(built.uri, ignore_errors=True)
    dataset_dir = os.path.dirname(built.uri)
    try:  # the build's own `latest` pointer, then the dataset directory if nothing else is there
        os.remove(os.path.join(dataset_dir, "latest"))
        os.rmdir(dataset_dir)
    except OSError:
        pass
    log.info("published %s: %s", uri, stats.to_json())
    return ReleaseResult(uri, built.manifest, built.shards, stats.to_json())
