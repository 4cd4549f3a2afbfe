"""The release's metrics as mergeable per-block accumulators: bounded memory whatever the size.

Each block of rows (on a Ray worker, or in-process) is added to a :class:`MetricsAccumulator`;
accumulators of different blocks merge in any order and give the same result. What is exact and
what is sampled:

- exact (sums): reject rates, CHAIR totals, entailment conflicts, negatives' counts, verdicts and
  false-negative rates (overall and per filter batch);
- a seeded fixed-size sample (bottom-k by ``sha1(seed:id:source_ref)``, the same rows whatever
  the block layout): retrieval R@K over at most ``recall_max_images`` kept image-caption pairs
  (its size, seed and the number of candidates are in the metrics), the similarity, continuity
  and difficulty distributions and plots over at most :data:`SAMPLE_ROWS` rows each
  (``pipeline.metrics.samples``);
- the audio-text (CLAP) metric apart from the image-text ones (``pipeline.metrics.audio_text``).

A release smaller than the samples gives exactly the values of the whole table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics import summaries as m
from pipeline.metrics.audio_text import AudioTextAccumulator
from pipeline.metrics.entailment import ConflictCounts, image_conflicts
from pipeline.metrics.retrieval import rate
from pipeline.metrics.samples import HASH, SAMPLE_ROWS, bottom, concat, mask, narrow, ordered, row_hashes
from pipeline.run.config import MetricsConfig
from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK


class MetricsAccumulator:
    """Add blocks, merge accumulators, then :meth:`finish` into a ``ReleaseMetrics``."""

    def __init__(self, cfg: MetricsConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or MetricsConfig()
        self.seed = seed
        self.rows = 0
        self.roots_rejected_by_code: Counter[str] = Counter()
        self.retrieval_candidates = 0
        self.retrieval: pa.Table | None = None  # kept roots of the retrieval kinds
        self.kept: pa.Table | None = None  # kept rows (continuity)
        self.everything: pa.Table | None = None  # all rows (similarity kept vs rejected)
        self.negatives: pa.Table | None = None
        self.chair_kept: Any = None
        self.chair_all: Any = None
        self.conflicts = ConflictCounts()
        self.neg_counts: Counter[str] = Counter()
        self.neg_types: Counter[str] = Counter()
        self.neg_verdicts: Counter[str] = Counter()
        self.neg_batches: dict[str, list[int]] = {}  # batch -> [scored, dropped]
        self.neg_scored = [0, 0]
        self.swap_below = [0, 0]
        self.audio = AudioTextAccumulator(self.cfg.recall_max_images)

    # ---- one block ------------------------------------------------------------------------
    def add(self, table: pa.Table) -> MetricsAccumulator:
        from stages.object_hallucination import chair_totals

        if table.num_rows == 0:
            return self
        cfg = self.cfg
        self.rows += table.num_rows
        table = table.append_column(HASH, row_hashes(table, self.seed))
        ok = pc.fill_null(pc.equal(table["status"], STATUS_OK), False)
        roots = pc.is_null(table["parent_id"])
        rejected_roots = mask(table, pc.and_(roots, pc.invert(ok)))
        self.roots_rejected_by_code.update(rejected_roots["reject_code"].to_pylist())
        image_col, text_cols = m.find_embedding_columns(table.schema, cfg)
        kept = mask(table, ok)
        kept_roots = mask(kept, pc.is_null(kept["parent_id"]))
        if image_col is not None and text_cols:
            pairs = mask(kept_roots, pc.is_in(kept_roots["kind"], pa.array(cfg.retrieval_kinds, pa.string())))
            self.retrieval_candidates += pairs.num_rows
            self.retrieval = bottom(concat(self.retrieval, narrow(pairs, ["id", "kind", image_col, *text_cols,
                                                                             HASH])), cfg.recall_max_images)
        self.kept = bottom(concat(self.kept, narrow(kept, ["id", m.CONTINUITY_COLUMN, HASH])), SAMPLE_ROWS)
        sim_cols = [cfg.similarity_column, *m.SIMILARITY_COLUMNS, image_col, *(text_cols[:1])]
        self.everything = bottom(concat(self.everything, narrow(table, ["id", "status", *sim_cols, HASH])),
                                  SAMPLE_ROWS)
        k, a = chair_totals(table)
        if self.chair_kept is None:
            self.chair_kept, self.chair_all = k, a
        else:
            self.chair_kept.add(k)
            self.chair_all.add(a)
        self._add_entailment(kept_roots)
        self._add_negatives(table)
        self.audio.add(table)
        return self

    def _add_entailment(self, kept_roots: pa.Table) -> None:
        from stages.object_lexicon import caption_texts

        objects = mask(kept_roots, pc.equal(kept_roots["kind"], "object"))
        cols = [c for c in ("id", "content", "captions", "boxes") if c in objects.schema.names]
        for batch in objects.select(cols).to_batches(max_chunksize=1024):
            for row in batch.to_pylist():
                labels = [(b or {}).get("label") or "" for b in row.get("boxes") or []]
                self.conflicts.add(image_conflicts(row["id"], caption_texts(row["content"], row.get("captions")),
                                                   labels))

    def _add_negatives(self, table: pa.Table) -> None:
        from stages.negatives_mining import FALSE_NEGATIVE_VERDICTS

        if m.NEGATIVE_TYPE_COLUMN not in table.schema.names:
            return
        negs = mask(table, pc.is_valid(table[m.NEGATIVE_TYPE_COLUMN]))
        if negs.num_rows == 0:
            return
        kept = np.asarray(pc.fill_null(pc.equal(negs["status"], STATUS_OK), False))
        dropped = np.asarray(pc.fill_null(pc.equal(negs["reject_code"], str(ReasonCode.HARD_NEG)), False))
        self.neg_counts.update(rows=negs.num_rows, kept=int(kept.sum()), dropped=int(dropped.sum()))
        self.neg_types.update(negs[m.NEGATIVE_TYPE_COLUMN].to_pylist())
        if m.VERDICT_COLUMN in negs.schema.names:
            verdicts = negs[m.VERDICT_COLUMN].to_pylist()
            batches = (negs["negative_batch"].to_pylist() if "negative_batch" in negs.schema.names
                       else [None] * len(verdicts))
            for verdict, batch in zip(verdicts, batches, strict=True):
                if verdict is None:
                    continue
                self.neg_verdicts[verdict] += 1
                bad = int(verdict in FALSE_NEGATIVE_VERDICTS)
                self.neg_scored[0] += 1
                self.neg_scored[1] += bad
                if batch is not None:
                    s = self.neg_batches.setdefault(str(batch), [0, 0])
                    s[0] += 1
                    s[1] += bad
        if {"positive_similarity", "negative_similarity"} <= set(negs.schema.names):
            rule = pc.or_(pc.starts_with(negs[m.NEGATIVE_TYPE_COLUMN], "replace_"),
                          pc.starts_with(negs[m.NEGATIVE_TYPE_COLUMN], "swap_"))
            pairs = mask(negs, rule)
            pos = pc.cast(pairs["positive_similarity"], pa.float64()).to_numpy(zero_copy_only=False)
            neg = pc.cast(pairs["negative_similarity"], pa.float64()).to_numpy(zero_copy_only=False)
            both = np.isfinite(pos) & np.isfinite(neg)
            self.swap_below[0] += int(both.sum())
            self.swap_below[1] += int((neg[both] < pos[both]).sum())
        wanted = ["id", "status", "reject_code", m.NEGATIVE_TYPE_COLUMN, *m.DIFFICULTY_COLUMNS,
                  "positive_similarity", "negative_similarity", HASH]
        self.negatives = bottom(concat(self.negatives, narrow(negs, wanted)), SAMPLE_ROWS)

    # ---- merging ------------------------------------------------------------------------------
    def merge(self, other: MetricsAccumulator) -> MetricsAccumulator:
        self.rows += other.rows
        self.roots_rejected_by_code.update(other.roots_rejected_by_code)
        self.retrieval_candidates += other.retrieval_candidates
        self.retrieval = bottom(concat(self.retrieval, other.retrieval), self.cfg.recall_max_images)
        self.kept = bottom(concat(self.kept, other.kept), SAMPLE_ROWS)
        self.everything = bottom(concat(self.everything, other.everything), SAMPLE_ROWS)
        self.negatives = bottom(concat(self.negatives, other.negatives), SAMPLE_ROWS)
        if other.chair_kept is not None:
            if self.chair_kept is None:
                self.chair_kept, self.chair_all = other.chair_kept, other.chair_all
            else:
                self.chair_kept.add(other.chair_kept)
                self.chair_all.add(other.chair_all)
        self.conflicts.add(other.conflicts)
        self.neg_counts.update(other.neg_counts)
        self.neg_types.update(other.neg_types)
        self.neg_verdicts.update(other.neg_verdicts)
        for b, (s, d) in other.neg_batches.items():
            mine = self.neg_batches.setdefault(b, [0, 0])
            mine[0] += s
            mine[1] += d
        self.neg_scored = [self.neg_scored[0] + other.neg_scored[0], self.neg_scored[1] + other.neg_scored[1]]
        self.swap_below = [self.swap_below[0] + other.swap_below[0], self.swap_below[1] + other.swap_below[1]]
        self.audio.merge(other.audio)
        return self

    # ---- the metrics -------------------------------------------------------------------------
    def finish(self, counts: Mapping[str, Any], stage_timings: Sequence[tuple[str, int, float]] = ()
               ) -> m.ReleaseMetrics:
        cfg = self.cfg
        out = m.ReleaseMetrics({}, {}, m.PlotData())
        n = counts["input_records"]
        rejected = sum(self.roots_rejected_by_code.values())
        by_code = sorted(self.roots_rejected_by_code.items())
        out.values["rejects"] = {"input_records": n, "total_rate": rate(rejected, n),
                                 "rate_by_code": {c: rate(k, n) for c, k in by_code}}
        retrieval = ordered(self.retrieval)
        if retrieval is None:
            out.skipped["retrieval"] = ("no image and text embedding columns in the table (run the "
                                        "clip_score stage, or set metrics.image_embedding_column)")
        else:
            sorted_ids = retrieval.take(pc.sort_indices(retrieval, sort_keys=[("id", "ascending")]))
            m.retrieval_metrics(sorted_ids, cfg, out)
            if "retrieval" in out.values:
                # the pool is every candidate pair; R@K and the per-batch pools are of the sample
                out.values["retrieval"]["pool_images"] = self.retrieval_candidates
                out.values["retrieval"]["sample"] = {"size": retrieval.num_rows, "seed": self.seed,
                                                     "candidates": self.retrieval_candidates,
                                                     "max": cfg.recall_max_images}
        everything = ordered(self.everything)
        if everything is not None:
            ok = np.asarray(pc.fill_null(pc.equal(everything["status"], STATUS_OK), False))
            m.similarity_metrics(everything, ok, cfg, out)
        if self.kept is not None:
            m.continuity_metrics(ordered(self.kept), out)
        else:
            out.skipped["continuity"] = f"no {m.CONTINUITY_COLUMN} column (run the segment_align stage)"
        m.hallucination_metrics(self.chair_kept, self.chair_all, out)
        m.entailment_metrics(self.conflicts, out)
        self._finish_negatives(out)
        self.audio.finish(out.values, out.skipped, out.plots, self.seed, cfg.recall_ks)
        out.values["throughput"] = [
            {"stage": name, "rows_in": rows, "seconds": round(sec, 4),
             "rows_per_s": round(rows / sec, 1) if sec > 0 else None}
            for name, rows, sec in stage_timings
        ]
        return out

    def _finish_negatives(self, out: m.ReleaseMetrics) -> None:
        sample = ordered(self.negatives)
        if sample is None or not self.neg_counts["rows"]:
            out.skipped["negatives"] = "no negative pairs in the table"
            return
        values: dict[str, Any] = {
            "rows": self.neg_counts["rows"], "kept": self.neg_counts["kept"],
            "false_negatives_dropped": self.neg_counts["dropped"],
            "by_type": dict(sorted(self.neg_types.items())),
        }
        m.difficulty_metrics(sample, values, out)
        if self.neg_scored[0]:
            values["false_negative_rate"] = self.neg_scored[1] / self.neg_scored[0]
            values["scored"] = self.neg_scored[0]
            values["by_verdict"] = dict(sorted(self.neg_verdicts.items()))
            per_batch = {b: d / s for b, (s, d) in self.neg_batches.items() if s}
            if per_batch:
                values["false_negative_rate_worst_batch"] = max(per_batch.values())
                values["false_negative_batches"] = len(per_batch)
        elif self.neg_counts["dropped"]:
            values["false_negative_rate"] = rate(self.neg_counts["dropped"], self.neg_counts["rows"])
        else:
            out.skipped["false_negative_rate"] = ("no stage checked the negatives for false negatives "
                                                  "(no negative_verdict, no ERR_CROSS_MDL_HARD_NEG)")
        m.swap_metrics(sample, values, out, exact=(self.swap_below[0], self.swap_below[1]))
        out.values["negatives"] = values
