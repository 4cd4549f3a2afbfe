"""Evaluation sets for the leakage check: a release or a manifest, read into an
:class:`stages.near_duplicates.EvalIndex` (its rows' first image vectors and captions).

- a directory with ``manifest.json`` (a release version, local or ``s3://``): its kept rows,
  ``data/*.parquet``, with their stored embeddings;
- a Parquet file that has the embedding column (staged rows, ``xmodal stage`` output): as is;
- any other manifest (JSONL or Parquet records): its valid records; a manifest carries no
  embeddings, so with ``embedding_column: image_fingerprint`` (model-free) its images are
  fingerprinted here (``stages.image_fingerprint`` with its default parameters, media resolved
  under the manifest's folder as at ingest) and image copies are found too; with any other
  column only caption copies are found.

:func:`leakage_summary` is what the run's summary (and the report) shows of the leakage
verdicts: rows per evaluation set and a few examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from access.io import filesystem_for
from pipeline.errors import UserError
from pipeline.run.ingest import read_manifest
from schemas.records import STATUS_OK
from stages.caption_templates import normalise_caption
from stages.dataset_checks import DatasetChecksParams, EvalSet
from stages.dataset_verdicts import unit_matrix
from stages.image_fingerprint import ImageFingerprint
from stages.near_duplicates import EvalIndex, word_count

_TEXT_COLUMNS = ("id", "content", "captions")
FINGERPRINT_COLUMN = ImageFingerprint.output_fields[0].name
_FINGERPRINT_BATCH = 256
EXAMPLES_PER_SET = 5


class EvalSetError(UserError):
    """An evaluation set that cannot be read; names the set and its path."""


def _read_rows(es: EvalSet, emb_column: str) -> pa.Table:
    fs, path = filesystem_for(es.path)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise EvalSetError(f"dataset_checks.leakage.eval_sets[{es.name}]: {es.path} not found")
    if info.type == pafs.FileType.Directory:
        if not fs.get_file_info(f"{path}/manifest.json").is_file:
            raise EvalSetError(f"dataset_checks.leakage.eval_sets[{es.name}]: {es.path} is a "
                               "directory without manifest.json (give a release version or a manifest)")
        return _release_rows(fs, f"{path}/data", emb_column)
    if path.endswith(".parquet"):
        with fs.open_input_file(path) as fh:
            names = pq.read_schema(fh).names
        if emb_column in names:
            with fs.open_input_file(path) as fh:
                table = pq.read_table(fh, columns=[c for c in (*_TEXT_COLUMNS, emb_column, "status")
                                                   if c in names])
            if "status" in table.column_names:
                table = table.filter(pc.fill_null(pc.equal(table["status"], STATUS_OK), False))
            return table
    rows = read_manifest(es.path)
    rows = rows.filter(pc.equal(rows["status"], STATUS_OK))
    if emb_column != FINGERPRINT_COLUMN:
        return rows.select(list(_TEXT_COLUMNS))
    # An image that cannot be fingerprinted leaves its row without a vector (captions still count).
    stage = ImageFingerprint()
    table = pa.concat_tables([stage(rows.slice(start, _FINGERPRINT_BATCH))
                              for start in range(0, max(rows.num_rows, 1), _FINGERPRINT_BATCH)])
    return table.select([*_TEXT_COLUMNS, FINGERPRINT_COLUMN])


def _release_rows(fs: pafs.FileSystem, data_dir: str, emb_column: str) -> pa.Table:
    """The text and embedding columns of a release's kept shards: each kind's shards have their
    own schema (``pipeline.release.kind_schemas``), so each file is read with the columns it has."""
    infos = fs.get_file_info(pafs.FileSelector(data_dir, allow_not_found=True))
    parts = []
    for info in sorted((i for i in infos if i.is_file and i.path.endswith(".parquet")), key=lambda i: i.path):
        with fs.open_input_file(info.path) as fh:
            names = pq.read_schema(fh).names
        with fs.open_input_file(info.path) as fh:
            table = pq.read_table(fh, columns=[c for c in (*_TEXT_COLUMNS, emb_column) if c in names])
        if emb_column in table.column_names:  # one vector per row, fixed-size or not, as a list<float16>
            table = table.set_column(table.schema.get_field_index(emb_column), emb_column,
                                     pa.array([_first_vector(v) for v in table[emb_column].to_pylist()],
                                              pa.list_(pa.float16())))
        parts.append(table)
    if not parts:
        return pa.table({"id": pa.array([], pa.string())})
    return pa.concat_tables(parts, promote_options="permissive")


def _first_vector(value: Any) -> list[float] | None:
    """A row's (first) vector: the row itself where it holds one (``fixed_size_list<float16, d>``),
    else its first (``list<list<float16>>``, one per image)."""
    if not value:
        return None
    return list(value) if not isinstance(value[0], (list, tuple)) else (list(value[0]) if value[0] else None)


def _comparable(vector: list[float] | None) -> bool:
    vec = np.asarray(vector or [], np.float32)
    return bool(vec.size and np.isfinite(vec).all() and vec.any())


def eval_index(es: EvalSet, emb_column: str, caption_min_words: int) -> EvalIndex:
    """Read one evaluation set (module docstring) into its index."""
    try:
        rows = _read_rows(es, emb_column)
    except (OSError, pa.ArrowInvalid) as err:
        raise EvalSetError(f"dataset_checks.leakage.eval_sets[{es.name}]: cannot read {es.path}: {err}") from None
    index = EvalIndex(es.name)
    ids = rows["id"].to_pylist()
    contents = rows["content"].to_pylist() if "content" in rows.column_names else [None] * len(ids)
    captions = rows["captions"].to_pylist() if "captions" in rows.column_names else [None] * len(ids)
    for rid, content, caps in zip(ids, contents, captions, strict=True):
        for text in [content, *(caps or [])]:
            key = normalise_caption(text)
            if key and word_count(key) >= caption_min_words:
                index.texts.setdefault(key, rid)
    if emb_column in rows.column_names:
        firsts = (_first_vector(v) for v in rows[emb_column].to_pylist())
        vectors = [(rid, v) for rid, v in zip(ids, firsts, strict=True) if _comparable(v)]
        if vectors:
            index.ids = [rid for rid, _ in vectors]
            index.emb = unit_matrix(pa.array([v for _, v in vectors], pa.list_(pa.float16())))
    return index


def load_eval_indexes(p: DatasetChecksParams) -> list[EvalIndex]:
    """Every configured evaluation set, in config order."""
    lp = p.leakage
    return [eval_index(es, lp.embedding_column, lp.caption_min_words) for es in lp.eval_sets]


def leak_of(detail: str) -> tuple[str, str, str] | None:
    """(evaluation set, evaluation row, ``image`` or ``caption``) of a leakage verdict's detail
    (``stages.near_duplicates.leakage_verdicts``), or None for another detail."""
    head, sep, tail = detail.rpartition(" of evaluation set '")
    _, row_sep, eval_id = head.rpartition("evaluation row ")
    if not sep or not row_sep or "'" not in tail:
        return None
    return tail.split("'", 1)[0], eval_id, "image" if detail.startswith("near-duplicate") else "caption"


def leakage_summary(merged: pa.Table, per_set: int = EXAMPLES_PER_SET) -> dict[str, Any]:
    """Of merged verdicts (one per row, sorted by ref): rows per evaluation set, and per set
    the first ``per_set`` rows as ``{"id", "eval_id", "by"}`` (``by``: image or caption)."""
    leaks = merged.filter(pc.equal(merged["check"], "leakage")) if merged.num_rows else merged
    by_set: dict[str, dict[str, Any]] = {}
    for ref, detail in zip(leaks["ref"].to_pylist(), leaks["detail"].to_pylist(), strict=True):
        parsed = leak_of(detail or "")
        if parsed is None:
            continue
        name, eval_id, by = parsed
        entry = by_set.setdefault(name, {"rows": 0, "by_image": 0, "by_caption": 0, "examples": []})
        entry["rows"] += 1
        entry[f"by_{by}"] += 1
        if len(entry["examples"]) < per_set:
            entry["examples"].append({"id": ref.split("\x1f", 1)[0], "eval_id": eval_id, "by": by})
    return dict(sorted(by_set.items()))
