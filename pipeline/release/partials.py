"""What one block contributes to a release's checks, merged on the driver in any order.

A :class:`ReleasePartial` holds the reconciliation counts, the placeholder-lint findings and the
media problems of kept rows (a count and the first few, by id), the report's example rejects
(the first ``per_code`` of each stage/code in (kind, id) order: a bottom-k, so the merge picks
the same rows as one pass over the whole table) and the metrics accumulator. It travels between
a worker and the driver pickled (:meth:`to_table` / :meth:`from_table`).
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.accumulate import MetricsAccumulator
from pipeline.release import summary
from pipeline.release.kind_schemas import NonNullCounts
from pipeline.release.rows import resolve_media
from pipeline.run.config import MetricsConfig
from schemas.placeholders import PlaceholderLinter
from schemas.records import STATUS_OK

FIRST_PROBLEMS = 5
EXAMPLE_COLUMNS = ("id", "kind", "status", "reject_stage", "reject_code", "reject_detail", "source_ref",
                   "content", "captions", "media", "boxes", "subtitles", "items")


class CountsError(ValueError):
    """The counts do not reconcile (the release turns it into ReleaseError)."""


@dataclass
class ReleasePartial:
    roots: int = 0
    roots_kept: int = 0
    rows_kept: int = 0
    rows_rejected: int = 0
    kept_by_kind: Counter[str] = field(default_factory=Counter)
    rejected_roots_by_kind: Counter[str] = field(default_factory=Counter)
    rejected_by_code: Counter[str] = field(default_factory=Counter)
    rejected_by_stage_code: Counter[str] = field(default_factory=Counter)
    derived_rejected_by_code: Counter[str] = field(default_factory=Counter)
    lint_count: int = 0
    lint_first: list[str] = field(default_factory=list)
    media_count: int = 0
    media_first: list[str] = field(default_factory=list)
    examples: pa.Table | None = None
    metrics: MetricsAccumulator | None = None
    by_origin: dict[str, Any] = field(default_factory=dict)  # summary.tally: input vs derived rows
    non_null: NonNullCounts = field(default_factory=NonNullCounts)  # kept rows: which columns each kind uses
    licenses: set[str] = field(default_factory=set)

    # ---- one block ----------------------------------------------------------------------------
    @classmethod
    def of_block(cls, table: pa.Table, vocab: Mapping[str, int], per_code: int,
                 metrics_cfg: MetricsConfig | None, seed: int = 0, lint: bool = True) -> ReleasePartial:
        out = cls(metrics=MetricsAccumulator(metrics_cfg, seed) if metrics_cfg is not None else None)
        if table.num_rows == 0:
            return out
        narrow = table.select(["parent_id", "status", "kind", "reject_stage", "reject_code"])
        ok = pc.fill_null(pc.equal(narrow["status"], STATUS_OK), False)
        root = pc.is_null(narrow["parent_id"])
        roots = narrow.filter(root)
        out.roots = roots.num_rows
        out.roots_kept = int(pc.sum(pc.cast(pc.fill_null(pc.equal(roots["status"], STATUS_OK), False),
                                            pa.int64())).as_py() or 0)
        kept = narrow.filter(ok)
        out.rows_kept = kept.num_rows
        out.kept_by_kind.update(kept["kind"].to_pylist())
        rej = narrow.filter(pc.invert(ok))
        out.rows_rejected = rej.num_rows
        out.rejected_by_code.update(rej["reject_code"].to_pylist())
        out.rejected_by_stage_code.update(f"{s}/{c}" for s, c in zip(rej["reject_stage"].to_pylist(),
                                                                    rej["reject_code"].to_pylist(), strict=True))
        rej_roots = roots.filter(pc.invert(pc.fill_null(pc.equal(roots["status"], STATUS_OK), False)))
        out.rejected_roots_by_kind.update(k or "unknown" for k in rej_roots["kind"].to_pylist())
        out.by_origin = summary.tally(table.select([c for c in summary.TALLY_COLUMNS if c in table.schema.names]))
        derived_rej = narrow.filter(pc.and_(pc.invert(ok), pc.invert(root)))
        out.derived_rejected_by_code.update(derived_rej["reject_code"].to_pylist())
        kept_rows = table.filter(ok)
        out.non_null.add(kept_rows)
        if "license" in table.schema.names:
            out.licenses.update(v for v in kept_rows["license"].to_pylist() if v)
        if lint:
            out._lint(kept_rows, vocab)
        out.examples = pick_examples(table, per_code)
        if out.metrics is not None:
            out.metrics.add(table)
        return out

    def _lint(self, kept: pa.Table, vocab: Mapping[str, int]) -> None:
        if kept.num_rows == 0:
            return
        verdicts = PlaceholderLinter(vocab).check_columns(kept["content"], kept["media"], kept["kind"])
        ids = kept["id"].to_pylist()
        found = sorted(f"{ids[i]}: {v.rule}: {v.detail}" for i, v in enumerate(verdicts) if v is not None)
        self.lint_count += len(found)
        self.lint_first = sorted(self.lint_first + found)[:FIRST_PROBLEMS]
        _, problems = resolve_media(kept)
        self.media_count += len(problems)
        self.media_first = sorted(self.media_first + problems)[:FIRST_PROBLEMS]

    # ---- merging ------------------------------------------------------------------------------
    def merge(self, other: ReleasePartial, per_code: int) -> ReleasePartial:
        for name in ("roots", "roots_kept", "rows_kept", "rows_rejected", "lint_count", "media_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("kept_by_kind", "rejected_roots_by_kind", "rejected_by_code", "rejected_by_stage_code",
                     "derived_rejected_by_code"):
            getattr(self, name).update(getattr(other, name))
        self.by_origin = summary.merge_tallies(self.by_origin, other.by_origin)
        self.non_null.merge(other.non_null)
        self.licenses |= other.licenses
        self.lint_first = sorted(self.lint_first + other.lint_first)[:FIRST_PROBLEMS]
        self.media_first = sorted(self.media_first + other.media_first)[:FIRST_PROBLEMS]
        if other.examples is not None:
            both = other.examples if self.examples is None else pa.concat_tables(
                [self.examples, other.examples], promote_options="permissive")
            self.examples = pick_examples(both, per_code)
        if other.metrics is not None:
            self.metrics = other.metrics if self.metrics is None else self.metrics.merge(other.metrics)
        return self

    def to_table(self) -> pa.Table:
        return pa.table({"partial": pa.array([pickle.dumps(self, protocol=5)], pa.large_binary())})

    @staticmethod
    def from_table(table: pa.Table) -> list[ReleasePartial]:
        return [pickle.loads(b) for b in table["partial"].to_pylist()]

    # ---- the release's counts -----------------------------------------------------------------
    def counts(self, input_records: int) -> dict[str, Any]:
        """The manifest's counts; raises CountsError unless ``input == kept + rejected`` over the
        rows without a parent (fan-out rows are counted apart)."""
        kept, rejected = self.roots_kept, self.roots - self.roots_kept
        if self.roots != input_records:
            raise CountsError(f"counts do not reconcile: {input_records} input records, {self.roots} rows "
                              f"without parent ({kept} kept + {rejected} rejected)")
        return {
            "input_records": input_records,
            "kept": kept,
            "rejected": rejected,
            "derived_kept": self.rows_kept - kept,
            "derived_rejected": self.rows_rejected - rejected,
            "kept_by_kind": dict(sorted(self.kept_by_kind.items())),
            "rejected_by_kind": dict(sorted(self.rejected_roots_by_kind.items())),
            "rejected_by_code": dict(sorted(self.rejected_by_code.items())),
            "rejected_by_stage_code": dict(sorted(self.rejected_by_stage_code.items())),
            "derived_rejected_by_code": dict(sorted(self.derived_rejected_by_code.items())),
            "by_origin": self.by_origin,
        }


def pick_examples(table: pa.Table, per_code: int) -> pa.Table:
    """The first ``per_code`` rejected rows of each stage/code, in (kind, id) order."""
    rejected = table.filter(pc.fill_null(pc.not_equal(table["status"], STATUS_OK), False))
    rejected = rejected.select([c for c in EXAMPLE_COLUMNS if c in rejected.schema.names])
    rejected = rejected.sort_by([("reject_stage", "ascending"), ("reject_code", "ascending"),
                                 ("kind", "ascending"), ("id", "ascending")])
    keys = [f"{s}/{c}" for s, c in zip(rejected["reject_stage"].to_pylist(),
                                       rejected["reject_code"].to_pylist(), strict=True)]
    seen: Counter[str] = Counter()
    take = []
    for i, key in enumerate(keys):
        if seen[key] < per_code:
            take.append(i)
            seen[key] += 1
    chosen = rejected.take(pa.array(take, pa.int64()))
    return chosen.sort_by([("kind", "ascending"), ("id", "ascending")])
