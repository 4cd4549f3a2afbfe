"""Dataset-level checks: template captions, near-duplicates and evaluation leakage.

Every other check looks at one row; these look at the dataset. They run on a narrow
*signature* of each eligible row (status ``ok``, no ``parent_id``, a kind in ``kinds``):
its reference, id, the ranking columns, one embedding vector per configured column and its
normalised texts. Each check turns groups of signatures into verdicts, a verdict names one row
by its reference; :func:`merge_verdicts` keeps one verdict per row and :func:`apply_verdicts`
writes them onto the full rows. Nothing here knows Ray: ``pipeline.run.dataset_checks`` groups
the signatures on Ray (or in-process) and calls the same functions on each group.

- ``templates`` (:mod:`stages.caption_templates`): rows grouped by normalised caption; within a
  group, uses are counted by image (rows whose images are near-duplicates are one use); beyond
  ``max_uses`` distinct uses, the rows of the extra uses are ``ERR_CROSS_MDL_TEMPLATE``,
  keeping the best-scoring uses.
- ``duplicates`` (:mod:`stages.near_duplicates`): SemDeDup-style, blocked by random-hyperplane
  LSH bands of the embedding; a row is ``ERR_CROSS_MDL_DUPLICATE`` when a row that ranks above
  it (larger image, then higher score, then smaller id) has cosine >= ``threshold`` to it; the
  detail names the highest-ranked such row.
- ``leakage`` (:mod:`stages.near_duplicates`): a row whose image embedding (cosine >=
  ``threshold``) or normalised caption (at least ``caption_min_words`` words) matches a row of
  an evaluation set is ``ERR_CROSS_MDL_DUPLICATE``, naming the set and its row.

A row with several verdicts gets the first of leakage, duplicate, template.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.records import STATUS_OK
from stages.caption_templates import normalise_caption
from stages.dataset_verdicts import row_refs

Kind = Literal["object", "segment", "document", "text"]


class DatasetCheckError(ValueError):
    """The rows cannot be checked as configured (a missing column); names the setting."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateParams(_Params):
    enabled: bool = True
    max_uses: int = Field(default=5, ge=1, description="visually distinct uses a caption may have")
    distinct_below: float = Field(default=0.95, gt=-1, le=1, description="two uses are one scene "
                                  "when their image cosine is at least this")
    embedding_column: str = "clip_image_emb"
    texts: Literal["content", "all"] = Field(default="content", description="group by the content "
                                             "only, or by the content and every extra caption")


class DuplicateParams(_Params):
    enabled: bool = True
    embedding_column: str = "clip_image_emb"
    threshold: float = Field(default=0.95, gt=-1, le=1, description="image cosine of a near-duplicate")
    caption_threshold: float | None = Field(default=None, gt=-1, le=1, description="also require "
                                            "this cosine between the first text embeddings")
    text_embedding_column: str = "clip_text_emb"
    bands: int = Field(default=8, ge=1, le=64, description="LSH bands: more find more pairs")
    bits: int = Field(default=10, ge=1, le=30, description="hyperplanes per band: more, smaller blocks")
    max_block_rows: int = Field(default=8192, ge=2, description="a larger block is split by "
                                "further hyperplanes")
    seed: int = Field(default=0, ge=0)


class EvalSet(_Params):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    path: str = Field(min_length=1, description="a release directory (data/*.parquet) or a "
                      "manifest (JSONL or Parquet), local or s3://")


class LeakageParams(_Params):
    eval_sets: list[EvalSet] = Field(default_factory=list)
    embedding_column: str = "clip_image_emb"
    threshold: float = Field(default=0.95, gt=-1, le=1)
    caption_min_words: int = Field(default=6, ge=1, description="shorter captions are too common "
                                   "to call a leak")


class DatasetChecksParams(_Params):
    """The ``dataset_checks:`` section of a run config."""

    after: str = Field(default="clip_score", description="run on the rows as this stage leaves them")
    kinds: list[Kind] = Field(default_factory=lambda: ["object"], min_length=1)  # type: ignore[arg-type]
    score_column: str | None = Field(default="clip_score", description="ranks uses and copies; "
                                     "None ranks by id only")
    templates: TemplateParams = Field(default_factory=TemplateParams)
    duplicates: DuplicateParams = Field(default_factory=DuplicateParams)
    leakage: LeakageParams = Field(default_factory=LeakageParams)
    partitions: int | None = Field(default=None, ge=1, description="shuffle partitions on Ray "
                                   "(default: the signature blocks)")
    actors: int = Field(default=2, ge=1, description="actors that write the verdicts on Ray")

    @field_validator("kinds")
    @classmethod
    def _unique(cls, kinds: list[Kind]) -> list[Kind]:
        return sorted(set(kinds))

    def embedding_columns(self) -> list[str]:
        cols = []
        if self.templates.enabled:
            cols.append(self.templates.embedding_column)
        if self.duplicates.enabled:
            cols.append(self.duplicates.embedding_column)
            if self.duplicates.caption_threshold is not None:
                cols.append(self.duplicates.text_embedding_column)
        if self.leakage.eval_sets:
            cols.append(self.leakage.embedding_column)
        return sorted(set(cols))


def emb_field(column: str) -> str:
    """The signature column that holds the first vector of ``column``."""
    return f"emb__{column}"


def _first_vectors(column: pa.ChunkedArray) -> pa.Array:
    """list<float16>: the first vector of each row's list of vectors (null when none, or when
    the vector is not finite or all zero: such a row cannot be compared)."""
    out: list[np.ndarray | None] = []
    for vectors in column.to_pylist():
        vec = np.asarray(vectors[0], np.float32) if vectors else None
        if vec is None or vec.size == 0 or not np.isfinite(vec).all() or not vec.any():
            out.append(None)
        else:
            out.append(vec.astype(np.float16))
    if not out:
        return pa.array([], pa.list_(pa.float16()))
    flat = [v for v in out if v is not None]
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float16), pa.float16())
    offsets = np.zeros(len(out) + 1, np.int32)
    offsets[1:] = np.cumsum([0 if v is None else len(v) for v in out])
    mask = pa.array([v is None for v in out], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)


def _first_image(media: list[dict[str, object] | None] | None) -> str | None:
    """The URI of the row's first image (as ingest resolved it), for the report's thumbnails."""
    return next((str(ref["uri"]) for ref in media or [] if ref and ref.get("modality") == "image"
                 and ref.get("uri")), None)


def _pixels(media: list[dict[str, object] | None] | None) -> int:
    for ref in media or []:
        if ref and ref.get("modality") == "image":
            w, h = ref.get("width"), ref.get("height")
            return int(w) * int(h) if isinstance(w, int) and isinstance(h, int) else 0
    return 0


def _require(rows: pa.Table, column: str, setting: str) -> None:
    if rows.schema.get_field_index(column) < 0:
        raise DatasetCheckError(f"dataset_checks.{setting}: {column!r} is not a column of the rows "
                                f"(run the stage that writes it before dataset_checks.after)")


def required_columns(p: DatasetChecksParams) -> list[tuple[str, str]]:
    """(setting, column) for every column the configured checks read beyond a record's own."""
    out = []
    if p.templates.enabled:
        out.append(("templates.embedding_column", p.templates.embedding_column))
    if p.duplicates.enabled:
        out.append(("duplicates.embedding_column", p.duplicates.embedding_column))
        if p.duplicates.caption_threshold is not None:
            out.append(("duplicates.text_embedding_column", p.duplicates.text_embedding_column))
    if p.leakage.eval_sets:
        out.append(("leakage.embedding_column", p.leakage.embedding_column))
    if p.score_column is not None:
        out.append(("score_column", p.score_column))
    return out


def check_columns(schema: pa.Schema, p: DatasetChecksParams) -> None:
    """Raise DatasetCheckError when a configured column is not in ``schema``."""
    rows = schema.empty_table()
    for setting, column in required_columns(p):
        _require(rows, column, setting)


SIGNATURE_FIXED = [("ref", pa.string()), ("id", pa.string()), ("kind", pa.string()),
                   ("pixels", pa.int64()), ("score", pa.float64()),
                   ("content_key", pa.string()), ("caption_keys", pa.list_(pa.string())),
                   ("image", pa.string())]


def signature_schema(p: DatasetChecksParams) -> pa.Schema:
    return pa.schema(SIGNATURE_FIXED + [(emb_field(c), pa.list_(pa.float16()))
                                        for c in p.embedding_columns()])


def signatures(rows: pa.Table, p: DatasetChecksParams) -> pa.Table:
    """The narrow signature of every eligible row of ``rows`` (see the module docstring)."""
    check_columns(rows.schema, p)
    eligible = pc.and_(pc.fill_null(pc.equal(rows["status"], STATUS_OK), False),
                       pc.is_in(rows["kind"], pa.array(p.kinds, pa.string())))
    if rows.schema.get_field_index("parent_id") >= 0:
        eligible = pc.and_(eligible, pc.is_null(rows["parent_id"]))
    rows = rows.filter(pc.fill_null(eligible, False))
    if p.score_column is None:
        score = pa.array(np.full(rows.num_rows, np.nan), pa.float64())
    else:
        score = pc.fill_null(rows[p.score_column].cast(pa.float64()), math.nan)
    contents, media = rows["content"].to_pylist(), rows["media"].to_pylist()
    captions = rows["captions"].to_pylist() if "captions" in rows.column_names else [None] * rows.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "ref": pa.array(row_refs(rows["id"].to_pylist(), rows["source_ref"].to_pylist()), pa.string()),
        "id": rows["id"], "kind": rows["kind"],
        "pixels": pa.array([_pixels(m) for m in media], pa.int64()),
        "score": score,
        "content_key": pa.array([normalise_caption(c)
                                 for c in contents], pa.string()),
        "caption_keys": pa.array([[k for k in (normalise_caption(c) for c in caps or [] if c) if k]
                                  for caps in captions], pa.list_(pa.string())),
        "image": pa.array([_first_image(m) for m in media], pa.string()),
    }
    for column in p.embedding_columns():
        columns[emb_field(column)] = _first_vectors(rows[column])
    schema = signature_schema(p)
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
