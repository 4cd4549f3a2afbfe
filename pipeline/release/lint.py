"""``xmodal lint``: the placeholder linter over released Parquet/JSONL shards.

Only the columns the grammar needs (``id``, ``kind``, ``content``, ``media``) are decoded: pyarrow
reads them with an explicit schema, and :class:`schemas.placeholders.PlaceholderLinter` checks
every row with one compiled regex. A shard that is not valid JSON/Parquet is itself a violation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from access.io import filesystem_for
from schemas.placeholders import PlaceholderLinter
from schemas.records import MEDIA_TYPE

LINT_SCHEMA = pa.schema(
    [("id", pa.string()), ("kind", pa.string()), ("content", pa.string()), ("media", pa.list_(MEDIA_TYPE))]
)


@dataclass(frozen=True)
class LintFinding:
    shard: str
    row_id: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.row_id}: {self.rule}: {self.detail}"


def read_lint_columns(uri: str) -> pa.Table:
    fs, path = filesystem_for(uri)
    if uri.endswith(".parquet"):
        with fs.open_input_file(path) as fh:
            table = pq.read_table(fh, columns=[n for n in LINT_SCHEMA.names])
        return table.select(LINT_SCHEMA.names).cast(LINT_SCHEMA)
    with fs.open_input_stream(path) as fh:
        return pajson.read_json(
            fh,
            read_options=pajson.ReadOptions(block_size=16 << 20),
            parse_options=pajson.ParseOptions(explicit_schema=LINT_SCHEMA, unexpected_field_behavior="ignore"),
        )


def lint_table(table: pa.Table, shard: str, linter: PlaceholderLinter) -> list[LintFinding]:
    verdicts = linter.check_columns(table["content"], table["media"], table["kind"])
    ids = table["id"].to_pylist()
    return [LintFinding(shard, str(ids[i]), v.rule, v.detail) for i, v in enumerate(verdicts) if v is not None]


def lint_shard(uri: str, linter: PlaceholderLinter) -> list[LintFinding]:
    try:
        table = read_lint_columns(uri)
    except (pa.ArrowInvalid, OSError) as err:
        return [LintFinding(uri, "-", "unreadable_shard", str(err).splitlines()[0][:300])]
    return lint_table(table, uri, linter)


def find_shards(uri: str) -> Iterator[str]:
    """The shard files under ``uri`` (a file or a release directory); rejects are skipped."""
    from pyarrow import fs as pafs

    fs, path = filesystem_for(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        yield uri
        return
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    prefix = "s3://" if uri.startswith("s3://") else ""
    for entry in sorted(fs.get_file_info(pafs.FileSelector(path, recursive=True)), key=lambda e: e.path):
        rel = entry.path[len(path) :].lstrip("/")
        if entry.is_file and rel.endswith((".parquet", ".jsonl")) and not rel.startswith(("rejects/", ".")):
            yield prefix + entry.path


def lint_path(uri: str, vocab: Mapping[str, int]) -> tuple[int, list[LintFinding]]:
    """Lint every shard under ``uri``; returns ``(shards checked, findings)``."""
    linter = PlaceholderLinter(vocab)
    findings: list[LintFinding] = []
    n = 0
    for shard in find_shards(uri):
        n += 1
        findings.extend(lint_shard(shard, linter))
    return n, findings


def findings_json(findings: list[LintFinding]) -> str:
    return json.dumps([f.__dict__ for f in findings], ensure_ascii=False, indent=2)
