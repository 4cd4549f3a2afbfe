"""Release: kept rows -> data/jsonl shards, rejects by stage and code, report, manifest last.

Layout (DESIGN.md): ``<root>/<dataset>/<version>/{data,jsonl,negatives,rejects,report}/...`` and
``manifest.json``, the commit marker, written last. Where the files go is a destination
(``pipeline.release.destinations``): on a local disk the version is built in a hidden sibling
directory and renamed into place; to S3 each file goes up as it is written, the manifest after
them, then the ``latest`` pointer (a failed release is resumed by running it again). With
``release.build_dir`` an S3 release is built there first and uploaded by
``pipeline.release.publish`` (a failed upload keeps the build; ``xmodal publish`` resumes it).
A release whose lint fails, whose counts do not reconcile or
whose quality gates fail is not published.

Media (``media``, the config's ``release.media``; ``pipeline.release.portable``): kept rows'
media files are copied into ``media/<aa>/<sha256><ext>`` through the destination (default;
listed in the manifest's ``media_files``), or the refs are written relative to the release, or
the bytes embedded in a ``media_bytes`` column. Rejects keep the URIs the build read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from access.io import filesystem_for, write_bytes
from pipeline.release.destinations import LocalDestination, ReleaseError, S3Destination
from pipeline.release.partials import CountsError, ReleasePartial
from pipeline.release.portable import MEDIA_MODES, MediaMode
from pipeline.release.shards import ShardInfo
from pipeline.release.source import RowSource, TableSource
from pipeline.release.stream import Gathered, gather, write_shards
from schemas.records import RECORD_FORMAT_VERSION, STATUS_OK

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "xmodal-release/1"
REPORT_PATH = "report/index.html"
CARD_PATH = "README.md"  # the dataset card: datasets.load_dataset(<release>, <kind>) reads its configs
FAILED_DIR = "_failed"  # <root>/<dataset>/_failed/<version>/: report of a release that failed its gates


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
    seconds: dict[str, float] = field(default_factory=dict)  # the release step's parts (build.py)


def reconcile(table: pa.Table, input_records: int) -> dict[str, Any]:
    """Counts for the manifest of one in-process table; raises ReleaseError unless
    ``input == ok + rejected`` on rows without a parent (fan-out rows are counted apart)."""
    partial = ReleasePartial.of_block(table, {}, 0, None, lint=False)
    try:
        return partial.counts(input_records)
    except CountsError as err:
        raise ReleaseError(str(err)) from None


def reject_shard_map(table: pa.Table, shard_target_bytes: int) -> dict[str, str]:
    """Rejected row id -> the reject file it is written to (for the report's links), by running
    the shard writer over ``table`` without writing."""
    rejected = table.filter(pc.fill_null(pc.not_equal(table["status"], STATUS_OK), False))
    writer = write_shards(TableSource(table), {}, lambda rel, data: (0, ""), target_bytes=shard_target_bytes,
                          jsonl=False, watch=rejected["id"].to_pylist())
    return writer.found


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def release_exists(root: str, dataset: str, version: str) -> bool:
    """Whether ``<root>/<dataset>/<version>`` has a manifest (is a published release)."""
    uri = f"{root.rstrip('/')}/{dataset}/{version}/manifest.json"
    if is_s3(uri):
        from pipeline.release.s3 import Publisher, PublishError, UploadSettings, s3_client, split_s3_uri

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


def _s3_publisher(uri: str) -> tuple[Any, str]:
    from pipeline.release.s3 import Publisher, UploadSettings, s3_client, split_s3_uri

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


def write_release(table: pa.Table, *, inputs: Sequence[InputFingerprint], vocab: Mapping[str, int],
                  **kwargs: Any) -> ReleaseResult:
    """Write one release version of an in-process table (see :func:`write_release_stream`)."""
    source = TableSource(table)
    gathered = gather(source, [i.uri for i in inputs], vocab)
    return write_release_stream(source, gathered, inputs=inputs, vocab=vocab, **kwargs)


def write_release_stream(
    source: RowSource,
    gathered: Gathered,
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
    report_html: str | Callable[[Mapping[str, str]], str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    gates: Sequence[Mapping[str, Any]] = (),
    stage_timings: Sequence[Any] = (),
    upload: Any = None,
    build_dir: str | None = None,
    report_ids: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    media: MediaMode = "copy",
    media_base: str | None = None,
) -> ReleaseResult:
    """Write one release version from ``source`` (whose checks ``gather`` collected); see the
    module docstring for the guarantees. ``gates`` are gate results (``GateResult.to_json()``):
    any failed one refuses the release. ``report_html`` is the page, or a function of
    ``{reject id: its file}`` for the ``report_ids`` that renders it once the shards are written.
    An ``s3://`` root is written straight to the bucket (``upload``: the
    ``pipeline.release.s3.UploadSettings``), or, with ``build_dir``, built there and uploaded
    after (``xmodal publish`` resumes a failed upload of that build). ``media``: ``relative``,
    ``copy`` or ``embed`` (module docstring); ``media_base``: the URI the release is published
    at when it is built elsewhere (relative refs are relative to it)."""
    bad = [g for g in gates if not g.get("passed")]
    if bad:
        raise ReleaseError(f"{len(bad)} quality gate(s) failed, first: {bad[0].get('detail')}")
    args = dict(inputs=inputs, config_hash=config_hash, code_version=code_version, vocab=vocab,
                shard_target_bytes=shard_target_bytes, jsonl=jsonl, report_html=report_html, metrics=metrics,
                gates=gates, stage_timings=stage_timings, report_ids=report_ids, extra=extra, media=media)
    if is_s3(root) and build_dir:
        return _write_s3_release(source, gathered, root=root, dataset=dataset, version=version,
                                 overwrite=overwrite, upload=upload, build_dir=build_dir, **args)
    partial = gathered.partial
    try:
        counts = partial.counts(sum(i.records for i in inputs))
    except CountsError as err:
        raise ReleaseError(str(err)) from None
    if partial.lint_count:
        raise ReleaseError(f"placeholder lint failed on {partial.lint_count} kept row(s), first: "
                           f"{partial.lint_first[0]}")
    if partial.media_count:
        raise ReleaseError(partial.media_first[0])
    if media not in MEDIA_MODES:
        raise ReleaseError(f"release media mode {media!r} is not one of {', '.join(MEDIA_MODES)}")
    dest: LocalDestination | S3Destination
    if is_s3(root):  # refuses an existing version itself (one HEAD of its manifest)
        dest = S3Destination(root, dataset, version, overwrite, upload)
    else:
        dest = LocalDestination(root, dataset, version, overwrite)
    try:
        writer = write_shards(source, gathered.losers, dest.put, target_bytes=shard_target_bytes, jsonl=jsonl,
                              watch=report_ids, non_null=partial.non_null, media=media,
                              release_uri=media_base or dest.final_path)
        card = _card(dataset, version, writer.schemas, partial.licenses, counts, media)
        card_info = None
        if card is not None:
            size, digest = dest.put(CARD_PATH, card.encode())
            card_info = {"path": CARD_PATH, "bytes": size, "sha256": digest}
        report = None
        if report_html is not None:
            html = report_html if isinstance(report_html, str) else report_html(writer.found)
            size, digest = dest.put(REPORT_PATH, html.encode())
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
            "shards": [s.to_json() for s in writer.shards],
            "counts": counts,
            "metrics": dict(metrics or {}),
            "gates": [dict(g) for g in gates],
            "report": report,
            "card": card_info,
            "media": {"mode": media, "files": len(writer.media_files),
                      "bytes": sum(f["bytes"] for f in writer.media_files.values())},
            "media_files": [writer.media_files[p] for p in sorted(writer.media_files)],
            "stage_timings": [_timing_json(t) for t in stage_timings],
            **dict(extra or {}),
        }
        dest.commit(_encode_manifest(manifest), version)
    except BaseException:
        dest.abort()
        raise
    stats = dest.pub.stats.to_json() if isinstance(dest, S3Destination) else None
    return ReleaseResult(dest.final_path, manifest, writer.shards, stats)


def _card(dataset: str, version: str, schemas: Mapping[str, pa.Schema], licenses: Iterable[str],
          counts: Mapping[str, Any], media: str = "copy") -> str | None:
    """The release's ``README.md`` (a Hugging Face dataset card): one config per kind, then
    ``negatives`` and ``rejects``, each with its files and features."""
    from pipeline.release.card import CardConfig, card_markdown

    def paths(name: str) -> list[str]:
        if name == "negatives":
            return ["negatives/pairs-*.parquet"]
        if name == "rejects":
            return ["rejects/*/*/part-*.parquet"]
        return [f"data/{name}-*.parquet"]

    order = sorted(n for n in schemas if n not in ("negatives", "rejects")) + [
        n for n in ("negatives", "rejects") if n in schemas]
    if not order:
        return None
    configs = [CardConfig(n, paths(n), schemas[n]) for n in order]
    return card_markdown(dataset, version, configs, licenses=sorted(licenses), counts=counts, media=media)


def _timing_json(t: Any) -> dict[str, Any]:
    """``(stage, rows_in, seconds)`` or a mapping with more (rows out, ...)."""
    if isinstance(t, Mapping):
        return dict(t)
    name, rows, sec = t
    return {"stage": name, "rows_in": rows, "seconds": round(sec, 4)}


def _write_s3_release(source: RowSource, gathered: Gathered, *, root: str, dataset: str, version: str,
                      overwrite: bool, upload: Any, build_dir: str, **kwargs: Any) -> ReleaseResult:
    """Build in ``build_dir``, then upload; the build is removed after a complete upload and kept
    (its path is in the error) after a failed one, so that the upload can be resumed."""
    from pipeline.release.publish import PublishError, UploadSettings, publish_directory

    check_can_release(root, dataset, version, overwrite)
    uri = f"{root.rstrip('/')}/{dataset}/{version}"
    built = write_release_stream(source, gathered, root=build_dir, dataset=dataset, version=version,
                                 overwrite=True, media_base=uri, **kwargs)
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
