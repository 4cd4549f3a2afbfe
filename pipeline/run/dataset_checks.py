"""The dataset-level checks (``stages.dataset_checks``) over a whole run: on Ray, or in-process.

Both paths do the same four steps with the same functions, so they give the same verdicts:

1. a narrow signature per eligible row (``map_batches``);
2. per check, groups of signatures -> verdicts: caption groups and LSH buckets through
   ``groupby(key).map_groups`` (a hash shuffle of the signatures only, never of the rows), and
   leakage through ``map_batches`` against the evaluation indexes, which one Ray task reads;
3. the verdicts (rejected rows only) are materialised; the driver holds their object refs;
4. the rows are streamed once more through actors that hold the merged verdicts and reject
   the rows they name (``apply_verdicts``): the row count never changes, rows already rejected
   and fan-out rows pass through untouched.

``ds`` is read twice (steps 1 and 4): give it a dataset read from staged Parquet, or a
materialised one, so that the stages before it do not run twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import UserError
from pipeline.run.eval_sets import load_eval_indexes
from stages.caption_templates import explode_texts, template_verdicts
from stages.dataset_checks import DatasetCheckError, DatasetChecksParams, check_columns, emb_field, signatures
from stages.dataset_verdicts import apply_verdicts, merge_verdicts, verdict_lookup
from stages.near_duplicates import EvalIndex, band_buckets, duplicate_verdicts, leakage_verdicts

_CPUS = 0.5  # fractional, as every task of the runner: a 2-core machine never deadlocks


def _signatures(p: DatasetChecksParams, rows: pa.Table) -> pa.Table:
    try:
        return signatures(rows, p)
    except DatasetCheckError as err:
        raise UserError(str(err)) from None


def _buckets(p: DatasetChecksParams, sig: pa.Table) -> pa.Table:
    d = p.duplicates
    text = emb_field(d.text_embedding_column) if d.caption_threshold is not None else None
    return band_buckets(sig, emb_field(d.embedding_column), text, d.bands, d.bits, d.seed)


def _bucket_verdicts(p: DatasetChecksParams, bucket: pa.Table) -> pa.Table:
    d = p.duplicates
    return duplicate_verdicts(bucket, d.threshold, d.caption_threshold, d.max_block_rows, d.seed)


def _texts(p: DatasetChecksParams, sig: pa.Table) -> pa.Table:
    return explode_texts(sig, emb_field(p.templates.embedding_column), p.templates.texts)


def _text_verdicts(p: DatasetChecksParams, group: pa.Table) -> pa.Table:
    return template_verdicts(group, p.templates.max_uses, p.templates.distinct_below)


def _leak_verdicts(p: DatasetChecksParams, indexes: list[EvalIndex], sig: pa.Table) -> pa.Table:
    lp = p.leakage
    try:
        return leakage_verdicts(sig, indexes, emb_field(lp.embedding_column), lp.threshold,
                                lp.caption_min_words)
    except ValueError as err:
        raise UserError(f"dataset_checks.leakage: {err}") from None


def iter_groups(table: pa.Table, key: str) -> Iterator[pa.Table]:
    """The rows of ``table`` sharing each value of ``key``, one table per value."""
    if table.num_rows == 0:
        return
    table = table.sort_by(key)
    values = table[key].to_numpy(zero_copy_only=False)
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(values)], strict=True):
        yield table.slice(int(start), int(stop - start))


def dataset_checks_local(rows: pa.Table, p: DatasetChecksParams) -> pa.Table:
    """``rows`` with the dataset-level verdicts applied, computed in this process."""
    sig = _signatures(p, rows)
    verdicts: list[pa.Table] = []
    if p.duplicates.enabled:
        verdicts += [_bucket_verdicts(p, g) for g in iter_groups(_buckets(p, sig), "bucket")]
    if p.templates.enabled:
        verdicts += [_text_verdicts(p, g) for g in iter_groups(_texts(p, sig), "key")]
    if p.leakage.eval_sets:
        verdicts.append(_leak_verdicts(p, load_eval_indexes(p), sig))
    return apply_verdicts(rows, verdict_lookup(merge_verdicts(verdicts)))


class _Bound:
    """A picklable ``fn(p, *bound, table)`` for Ray tasks."""

    def __init__(self, fn: Any, p: DatasetChecksParams, *bound: Any) -> None:
        self.fn, self.p, self.bound = fn, p, bound

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.fn(self.p, *self.bound, table)


class _LeakTask:
    """Leakage on a batch of signatures, against the indexes one task read (an object ref)."""

    def __init__(self, p: DatasetChecksParams, index_ref: list[Any]) -> None:
        self.p, self.index_ref = p, index_ref

    def __call__(self, sig: pa.Table) -> pa.Table:
        import ray

        return _leak_verdicts(self.p, ray.get(self.index_ref[0]), sig)


class _ApplyVerdicts:
    """Actor: the merged verdicts, loaded once, written onto each batch of rows."""

    def __init__(self, verdict_refs: list[Any]) -> None:
        import ray

        self.lookup = verdict_lookup(merge_verdicts(ray.get(verdict_refs)))

    def __call__(self, rows: pa.Table) -> pa.Table:
        return apply_verdicts(rows, self.lookup)


def dataset_checks_on_ray(ds: Any, p: DatasetChecksParams, batch_size: int = 1024) -> Any:
    """``ds`` (a ``ray.data.Dataset`` of staged rows) with the verdicts applied, lazily; see
    the module docstring for what runs where."""
    import ray
    from ray.data import ActorPoolStrategy

    try:
        check_columns(ds.schema().base_schema, p)
    except DatasetCheckError as err:
        raise UserError(str(err)) from None
    kw: dict[str, Any] = {"batch_format": "pyarrow", "num_cpus": _CPUS}
    sig = ds.map_batches(_Bound(_signatures, p), batch_size=batch_size, **kw).materialize()
    parts = p.partitions or max(1, sig.num_blocks())
    verdicts = []
    if p.duplicates.enabled:
        buckets = sig.map_batches(_Bound(_buckets, p), **kw)
        verdicts.append(buckets.groupby("bucket", num_partitions=parts)
                        .map_groups(_Bound(_bucket_verdicts, p), **kw))
    if p.templates.enabled:
        texts = sig.map_batches(_Bound(_texts, p), **kw)
        verdicts.append(texts.groupby("key", num_partitions=parts).map_groups(_Bound(_text_verdicts, p), **kw))
    if p.leakage.eval_sets:
        index_ref = ray.remote(num_cpus=_CPUS)(load_eval_indexes).remote(p)
        verdicts.append(sig.map_batches(_LeakTask(p, [index_ref]), **kw))
    if not verdicts:
        return ds
    merged = verdicts[0].union(*verdicts[1:]) if len(verdicts) > 1 else verdicts[0]
    refs = merged.materialize().to_arrow_refs()
    return ds.map_batches(_ApplyVerdicts, fn_constructor_kwargs={"verdict_refs": refs},
                          compute=ActorPoolStrategy(min_size=1, max_size=p.actors),
                          batch_size=batch_size, **kw)
