"""The metrics of one release (see ``pipeline.metrics.accumulate`` for how they are gathered
block by block and ``pipeline.metrics.summaries`` for each summary):

- ``retrieval``: R@k image->text and text->image over a seeded sample of the kept rows'
  embeddings, and per pool of ``batch_images`` images;
- ``similarity``: the image-text similarity of kept vs rejected rows;
- ``continuity``: the distribution of ``continuity_tau`` (segment alignment);
- ``hallucination``: CHAIR-i / CHAIR-s (``stages.object_hallucination.chair_totals``);
- ``entailment``: caption-pair conflicts (``pipeline.metrics.entailment``);
- ``negatives``: difficulty distribution and false-negative rate of negative pairs;
- ``audio_text``: ``clap_score`` kept vs rejected and audio-text R@k over a seeded sample of
  kept clips (``pipeline.metrics.audio_text``);
- ``rejects``: reject rates by code over the input records; ``throughput``: per stage.

Each metric is computed when its inputs exist and is otherwise listed under ``skipped`` with the
reason, so the report can say why it is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipeline.metrics.accumulate import MetricsAccumulator
from pipeline.metrics.summaries import PlotData, ReleaseMetrics, find_embedding_columns
from pipeline.run.config import MetricsConfig

__all__ = ["MetricsAccumulator", "PlotData", "ReleaseMetrics", "compute_release_metrics",
           "find_embedding_columns"]


def compute_release_metrics(table: pa.Table, counts: Mapping[str, Any],
                            stage_timings: Sequence[tuple[str, int, float]],
                            cfg: MetricsConfig | None = None, seed: int = 0) -> ReleaseMetrics:
    """Every metric whose inputs exist in ``table``: one block through the accumulator."""
    return MetricsAccumulator(cfg, seed).add(table).finish(counts, stage_timings)
