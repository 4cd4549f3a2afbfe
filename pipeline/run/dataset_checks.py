"""The dataset-level checks (``stages.dataset_checks``) over a whole run: on Ray, or in-process.

Both paths do the same four steps with the same functions, so they give the same verdicts:

1. a narrow signature per eligible row (``map_batches``);
2. per check, groups of signatures -> verdicts: caption groups and LSH buckets through
   ``groupby(key).map_groups`` (a hash shuffle of the signatures only, never of the rows), and
   leakage through ``map_batches`` against the evaluation indexes, which one Ray task reads;
3. the verdicts (rejected rows only) are materialised; the driver holds their object refs and
   a small summary one task makes of them (:func:`summarise_verdicts`: rows per check, the top
   templates with counts and a few images, leakage rows per evaluation set with examples),
   which the report shows;
4. the rows are streamed once more through actors that hold the merged verdicts and reject
   the rows they name (``apply_verdicts``): the row count never changes, rows already rejected
   and fan-out rows pass through untouched.

``ds`` is read twice (steps 1 and 4): give it a dataset read from staged Parquet, or a
materialised one, so that the stages before it do not run twice.

:func:`run_stages_checked` is the in-process run of a config's stages with the checks after the
stage ``after`` names (the Ray runner does the same with its own staging, ``ray_runner``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError
from pipeline.run.eval_sets import leakage_summary, load_eval_indexes
from stages.base import Stage
from stages.caption_templates import TEMPLATE_DETAIL_RE, explode_texts, template_verdicts
from stages.dataset_checks import DatasetCheckError, DatasetChecksParams, check_columns, emb_field, signatures
from stages.dataset_verdicts import apply_verdicts, merge_verdicts, verdict_lookup
from stages.near_duplicates import EvalIndex, band_buckets, duplicate_verdicts, leakage_verdicts

_CPUS = 0.5  # fractional, as every task of the runner: a 2-core machine never deadlocks
TOP_TEMPLATES, IMAGES_PER_TEMPLATE = 10, 4
Summary = dict[str, Any]


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


def summarise_verdicts(tables: Sequence[pa.Table], top: int = TOP_TEMPLATES) -> Summary:
    """What the report shows of the merged verdicts: rejected rows per check and the ``top``
    templates by the rows that carry them (caption, rows, rejected, kept ids, a few images of
    rejected uses) and the leakage rows per evaluation set (``eval_sets.leakage_summary``)."""
    merged = merge_verdicts(tables)
    by_check = Counter(merged["check"].to_pylist())
    templates: dict[str, dict[str, Any]] = {}
    picked = merged.filter(pc.equal(merged["check"], "template")).sort_by("ref")
    for detail, image in zip(picked["detail"].to_pylist(), picked["image"].to_pylist(), strict=True):
        match = TEMPLATE_DETAIL_RE.match(detail)
        if match is None:
            continue
        entry = templates.setdefault(detail, {
            "caption": json.loads(match.group(1)), "rows": int(match.group(2)), "rejected": 0,
            "kept": [k for k in detail.rsplit("(", 1)[-1].rstrip(")").split(", ") if k != "..."],
            "images": []})
        entry["rejected"] += 1
        if image and len(entry["images"]) < IMAGES_PER_TEMPLATE:
            entry["images"].append(image)
    ranked = sorted(templates.values(), key=lambda t: (-t["rows"], t["caption"]))
    return {"rejected": {c: by_check.get(c, 0) for c in ("template", "duplicate", "leakage")},
            "templates_total": len(templates), "templates": ranked[:top],
            "leakage": leakage_summary(merged)}


def _summarise_refs(refs: list[Any]) -> Summary:
    import ray

    return summarise_verdicts(ray.get(refs))


def dataset_checks_local(rows: pa.Table, p: DatasetChecksParams) -> tuple[pa.Table, Summary]:
    """``rows`` with the dataset-level verdicts applied, computed in this process, and the
    verdicts' summary."""
    sig = _signatures(p, rows)
    verdicts: list[pa.Table] = []
    if p.duplicates.enabled:
        verdicts += [_bucket_verdicts(p, g) for g in iter_groups(_buckets(p, sig), "bucket")]
    if p.templates.enabled:
        verdicts += [_text_verdicts(p, g) for g in iter_groups(_texts(p, sig), "key")]
    if p.leakage.eval_sets:
        verdicts.append(_leak_verdicts(p, load_eval_indexes(p), sig))
    return apply_verdicts(rows, verdict_lookup(merge_verdicts(verdicts))), summarise_verdicts(verdicts)


def split_at_after(names: Sequence[str], p: DatasetChecksParams | None) -> int:
    """How many of the stages ``names`` run before the checks: all without checks, else up to
    and including ``p.after``."""
    if p is None:
        return len(names)
    if p.after not in names:
        raise UserError(f"dataset_checks.after: {p.after!r} is not one of the stages run "
                        f"({', '.join(names) or 'none'})")
    return list(names).index(p.after) + 1


def checks_timing(rows: int, seconds: float, summary: Summary) -> dict[str, Any]:
    """The checks' entry among the stage timings (rows are rejected, never dropped)."""
    return {"stage": "dataset_checks", "rows_in": rows, "rows_out": rows,
            "seconds": round(seconds, 4), "summary": summary}


def run_stages_checked(table: pa.Table, stages: Sequence[Stage], p: DatasetChecksParams | None
                       ) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The stages in-process, with the dataset-level checks on the rows as the stage ``p.after``
    leaves them; every row and the timings (the checks' entry carries their summary)."""
    from pipeline.run.local_runner import StageTiming, run_stages

    split = split_at_after([s.name for s in stages], p)
    first = run_stages(table, stages[:split])
    timings: list[StageTiming | dict[str, Any]] = list(first.timings)
    rows = first.table
    if p is not None:
        t0 = time.perf_counter()
        rows, summary = dataset_checks_local(rows, p)
        timings.append(checks_timing(rows.num_rows, time.perf_counter() - t0, summary))
    rest = run_stages(rows, stages[split:])
    return rest.table, [t if isinstance(t, dict) else {"stage": t.name, "rows_in": t.rows_in, "rows_out": t.rows_out,
                                                        "seconds": t.seconds} for t in [*timings, *rest.timings]]


class _Bound:
    """A picklable ``fn(p, *bound, table)`` for Ray tasks, named ``dataset_checks<fn>`` (what
    Ray Data shows for its operator; ``map_groups`` also needs a ``__name__``)."""

    def __init__(self, fn: Any, p: DatasetChecksParams, *bound: Any) -> None:
        self.fn, self.p, self.bound = fn, p, bound
        self.__name__ = f"dataset_checks{fn.__name__}"

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


def dataset_checks_on_ray(ds: Any, p: DatasetChecksParams, batch_size: int = 1024) -> tuple[Any, Summary]:
    """``ds`` (a ``ray.data.Dataset`` of staged rows) with the verdicts applied, lazily, and the
    verdicts' summary; see the module docstring for what runs where."""
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
        return ds, summarise_verdicts([])
    merged = verdicts[0].union(*verdicts[1:]) if len(verdicts) > 1 else verdicts[0]
    refs = merged.materialize().to_arrow_refs()
    summary = ray.get(ray.remote(num_cpus=_CPUS)(_summarise_refs).remote(refs))
    return ds.map_batches(_ApplyVerdicts, fn_constructor_kwargs={"verdict_refs": refs},
                          compute=ActorPoolStrategy(min_size=1, max_size=p.actors),
                          batch_size=batch_size, **kw), summary
