"""The pieces of a release's metrics: each summarises what ``pipeline.metrics.accumulate``
collected (exact totals, or a seeded sample of rows) into the values the manifest and report show.

Each metric is computed when its inputs exist and is otherwise listed under ``skipped`` with the
reason (e.g. recall without embedding columns), so the report can say why it is absent:

- ``retrieval``: R@k image->text and text->image over the kept rows' embeddings (a fixed sample
  beyond ``recall_max_images``), and per pool of ``batch_images`` images;
- ``similarity``: the image-text similarity of kept vs rejected rows (never ``clap_score``);
- ``continuity``: the distribution of ``continuity_tau`` (segment alignment);
- ``hallucination``: CHAIR-i / CHAIR-s (``stages.object_hallucination.chair_totals``);
- ``entailment``: caption-pair conflicts (``pipeline.metrics.entailment``);
- ``negatives``: difficulty distribution and false-negative rate of negative pairs;
- ``rejects``: reject rates by code over the input records; ``throughput``: per stage.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.entailment import ConflictCounts
from pipeline.metrics.retrieval import (
    batched_recall,
    distribution,
    retrieval_recall,
    summarise_batches,
    unit_rows,
)
from pipeline.run.config import MetricsConfig
from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK

# image-text scores only: clap_score (audio-text) is the audio_text metric's (pipeline.metrics.audio_text)
SIMILARITY_COLUMNS = ("clip_score", "clip_similarity", "similarity")
DIFFICULTY_COLUMNS = ("negative_difficulty", "negative_similarity", "negative_score",
                      "hard_negative_score")
CONTINUITY_COLUMN = "continuity_tau"
NEGATIVE_TYPE_COLUMN = "negative_type"
VERDICT_COLUMN = "negative_verdict"


@dataclass
class PlotData:
    """Arrays behind the report's plots (not written to the manifest)."""

    similarity_kept: np.ndarray | None = None
    similarity_rejected: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    heatmap_images: list[str] = field(default_factory=list)
    heatmap_captions: list[str] = field(default_factory=list)
    heatmap_owner: list[int] = field(default_factory=list)
    continuity: np.ndarray | None = None
    difficulty_kept: np.ndarray | None = None
    difficulty_dropped: np.ndarray | None = None
    swap_clean: np.ndarray | None = None
    swap_mismatched: np.ndarray | None = None
    clap_kept: np.ndarray | None = None
    clap_rejected: np.ndarray | None = None


@dataclass
class ReleaseMetrics:
    values: dict[str, Any]
    skipped: dict[str, str]
    plots: PlotData
    conflict_examples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.values, "skipped": dict(sorted(self.skipped.items()))}


# ---- embeddings -------------------------------------------------------------------------
def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_vector(t: pa.DataType) -> bool:
    return _is_list(t) and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))


def _is_vector_list(t: pa.DataType) -> bool:
    return _is_list(t) and _is_vector(t.value_type)


def find_embedding_columns(schema: pa.Schema, cfg: MetricsConfig) -> tuple[str | None, list[str]]:
    """``(image column, text columns)`` of one model: the configured names, else the first
    column named ``<prefix>image_emb...`` and the ``<prefix>text...``/``<prefix>caption...``
    embedding columns with the same prefix (``clip_image_emb`` goes with ``clip_text_emb``, never
    with ``clap_text_emb``). A column holds one vector a row or a list of vectors."""
    names = schema.names

    def is_embedding(n: str) -> bool:
        t = schema.field(n).type
        return "emb" in n and (_is_vector(t) or _is_vector_list(t))

    image = cfg.image_embedding_column
    if image is None:
        image = next((n for n in names if is_embedding(n) and "image" in n), None)
    texts = cfg.text_embedding_columns
    if texts is None and image is not None:
        prefix = image[: image.index("image")] if "image" in image else ""
        texts = [n for n in names if n.startswith(prefix) and is_embedding(n)
                 and n[len(prefix):].startswith(("text", "caption"))]
        # one-vector columns first: the first text column is the row's own text (similarity)
        texts.sort(key=lambda n: _is_vector_list(schema.field(n).type))
    return (image if image in names else None), [t for t in texts or [] if t in names]


def column_vectors(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(row index of each vector, vectors)`` of a vector or list-of-vectors column; null
    vectors and vectors of a minority width are left out."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = np.arange(len(arr))
    if _is_vector_list(arr.type):
        per_row = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
        rows = np.repeat(rows, per_row)
        arr = pc.list_flatten(arr)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    if lengths.size == 0 or lengths.max() == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    width = Counter(lengths[lengths > 0].tolist()).most_common(1)[0][0]
    keep = lengths == width
    flat = pc.list_flatten(arr.filter(pa.array(keep))).to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(-1, width)
    return rows[keep], vectors


@dataclass
class RetrievalPool:
    ids: list[str]
    images: np.ndarray
    texts: np.ndarray
    text_image: np.ndarray


def retrieval_pool(kept_roots: pa.Table, image_col: str, text_cols: Sequence[str]) -> RetrievalPool:
    """Images of the kept rows with one finite image embedding, and all their finite text
    vectors (rows with several images, e.g. documents, are not image-caption pairs)."""
    img_rows, img_vecs = column_vectors(kept_roots[image_col])
    single = np.bincount(img_rows, minlength=kept_roots.num_rows)[img_rows] == 1
    ok = single & (np.isfinite(img_vecs).all(axis=1) if img_vecs.size else np.zeros(0, bool))
    img_rows, img_vecs = img_rows[ok], img_vecs[ok]
    txt_rows_parts, txt_parts = [], []
    for name in text_cols:
        r, v = column_vectors(kept_roots[name])
        if v.size and v.shape[1] == img_vecs.shape[1]:
            finite = np.isfinite(v).all(axis=1)
            txt_rows_parts.append(r[finite])
            txt_parts.append(v[finite])
    if not txt_parts or img_vecs.size == 0:
        return RetrievalPool([], np.empty((0, 0)), np.empty((0, 0)), np.empty(0, np.int64))
    txt_rows, txt_vecs = np.concatenate(txt_rows_parts), np.concatenate(txt_parts)
    has_text = np.isin(img_rows, txt_rows)
    img_rows, img_vecs = img_rows[has_text], img_vecs[has_text]
    keep = np.isin(txt_rows, img_rows)
    order = np.argsort(txt_rows[keep], kind="stable")  # texts grouped by row, columns in order
    owner = np.searchsorted(img_rows, txt_rows[keep][order])  # img_rows is ascending
    ids = kept_roots["id"].to_pylist()
    return RetrievalPool([ids[int(r)] for r in img_rows], img_vecs, txt_vecs[keep][order], owner)


def subsample(pool: RetrievalPool, max_images: int) -> RetrievalPool:
    """At most ``max_images`` images chosen by id hash: the same ids whatever the row order."""
    if len(pool.ids) <= max_images:
        return pool
    chosen = sorted(range(len(pool.ids)), key=lambda i: hashlib.sha1(pool.ids[i].encode()).digest())
    keep = np.sort(np.array(chosen[:max_images], dtype=np.int64))
    remap = np.full(len(pool.ids), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    mask = remap[pool.text_image] >= 0
    return RetrievalPool([pool.ids[i] for i in keep], pool.images[keep], pool.texts[mask],
                         remap[pool.text_image[mask]])


# ---- the release's metrics, from accumulated totals and samples -------------------------
def _mask(table: pa.Table, expr: pa.ChunkedArray | pa.Array) -> pa.Table:
    return table.filter(pc.fill_null(expr, False))


def retrieval_metrics(kept_roots: pa.Table, cfg: MetricsConfig, out: ReleaseMetrics) -> None:
    """R@K over the kept image-caption pairs given (the accumulator's seeded sample)."""
    image_col, text_cols = find_embedding_columns(kept_roots.schema, cfg)
    if image_col is None or not text_cols:
        out.skipped["retrieval"] = ("no image and text embedding columns in the table (run the "
                                    "clip_score stage, or set metrics.image_embedding_column)")
        return
    rows = _mask(kept_roots, pc.is_in(kept_roots["kind"], pa.array(cfg.retrieval_kinds, pa.string())))
    pool = retrieval_pool(rows, image_col, text_cols)
    if len(pool.ids) < 2:
        out.skipped["retrieval"] = (f"fewer than 2 kept {'/'.join(cfg.retrieval_kinds)} rows with "
                                    f"{image_col} and {', '.join(text_cols)}")
        return
    sample = subsample(pool, cfg.recall_max_images)
    recall = retrieval_recall(sample.images, sample.texts, sample.text_image, cfg.recall_ks)
    batches = batched_recall(pool.images, pool.texts, pool.text_image, cfg.batch_images, cfg.recall_ks)
    out.values["retrieval"] = {
        **recall.to_json(), "pool_images": len(pool.ids),
        "columns": {"image": image_col, "text": list(text_cols)}, "kinds": list(cfg.retrieval_kinds),
        "per_batch": {"batch_images": cfg.batch_images, **summarise_batches(batches)},
    }
    n = min(cfg.heatmap_images, len(pool.ids))
    mask = pool.text_image < n
    owner = pool.text_image[mask]
    out.plots.heatmap = unit_rows(pool.images[:n]) @ unit_rows(pool.texts[mask]).T
    out.plots.heatmap_images = pool.ids[:n]
    out.plots.heatmap_owner = owner.tolist()
    seen: Counter[int] = Counter()
    labels = []
    for o in owner.tolist():
        labels.append(f"{pool.ids[o]}#{seen[o]}")
        seen[o] += 1
    out.plots.heatmap_captions = labels


def _row_similarity(table: pa.Table, cfg: MetricsConfig) -> tuple[str, np.ndarray] | None:
    """Per-row image-text similarity: the score column, else the cosine of the row's image
    embedding and its first text embedding (NaN where a row has neither)."""
    name = cfg.similarity_column or next((c for c in SIMILARITY_COLUMNS if c in table.schema.names), None)
    if name is not None and name in table.schema.names:
        return name, pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)
    image_col, text_cols = find_embedding_columns(table.schema, cfg)
    if image_col is None or not text_cols:
        return None
    img_rows, img = column_vectors(table[image_col])
    txt_rows, txt = column_vectors(table[text_cols[0]])
    if img.size == 0 or txt.size == 0 or img.shape[1] != txt.shape[1]:
        return None
    first_txt = np.full(table.num_rows, -1)
    rows_with_text, first = np.unique(txt_rows, return_index=True)  # each row's first text
    first_txt[rows_with_text] = first
    has = first_txt[img_rows] >= 0
    sims = np.full(table.num_rows, np.nan)
    pairs = unit_rows(img[has]) * unit_rows(txt[first_txt[img_rows[has]]])
    sims[img_rows[has]] = pairs.sum(axis=1)
    return f"cosine({image_col}, {text_cols[0]})", sims


def similarity_metrics(table: pa.Table, ok: np.ndarray, cfg: MetricsConfig, out: ReleaseMetrics) -> None:
    found = _row_similarity(table, cfg)
    if found is None:
        out.skipped["similarity"] = "no similarity column (clip_score) and no embeddings"
        return
    name, sims = found
    kept, rejected = sims[ok], sims[~ok]
    out.plots.similarity_kept, out.plots.similarity_rejected = kept, rejected
    out.values["similarity"] = {"source": name, "kept": distribution(kept[np.isfinite(kept)]),
                                "rejected": distribution(rejected[np.isfinite(rejected)]),
                                "sampled_rows": int(table.num_rows)}


def continuity_metrics(kept: pa.Table, out: ReleaseMetrics) -> None:
    if CONTINUITY_COLUMN not in kept.schema.names:
        out.skipped["continuity"] = f"no {CONTINUITY_COLUMN} column (run the segment_align stage)"
        return
    values = pc.drop_null(pc.cast(kept[CONTINUITY_COLUMN], pa.float64())).to_numpy()
    if values.size == 0:
        out.skipped["continuity"] = "no kept segment row has a continuity score"
        return
    out.plots.continuity = values
    out.values["continuity"] = distribution(values, bins=20, value_range=(-1.0, 1.0))


def hallucination_metrics(kept: Any, everything: Any, out: ReleaseMetrics) -> None:
    """CHAIR from the summed ``ChairCounts`` of the kept object rows and of all of them."""
    if kept is None or kept.captions == 0:
        out.skipped["hallucination"] = "no kept object row with boxes and captions"
        return

    def summary(c: Any) -> dict[str, Any]:
        return {"chair_i": c.chair_i, "chair_s": c.chair_s, "mentions": c.mentions,
                "hallucinated_mentions": c.hallucinated_mentions, "captions": c.captions,
                "hallucinated_captions": c.hallucinated_captions,
                "top_objects": dict(c.hallucinated_objects.most_common(10))}

    out.values["hallucination"] = {**summary(kept), "all_object_rows": summary(everything)}


def entailment_metrics(total: ConflictCounts, out: ReleaseMetrics) -> None:
    if total.images == 0:
        out.skipped["entailment"] = "no kept object row with two or more captions"
        return
    out.conflict_examples = total.examples
    out.values["entailment"] = {
        "images": total.images, "pairs": total.pairs,
        "conflicting_images": total.conflicting_images, "conflicting_pairs": total.conflicting_pairs,
        "image_conflict_rate": total.image_rate, "pair_conflict_rate": total.pair_rate,
        "pairs_by_type": dict(sorted(total.pairs_by_type.items())),
    }


def difficulty_metrics(negs: pa.Table, values: dict[str, Any], out: ReleaseMetrics) -> None:
    """Difficulty of the (sampled) negative pairs, kept vs dropped as false negatives."""
    kept = np.asarray(pc.fill_null(pc.equal(negs["status"], STATUS_OK), False))
    dropped = np.asarray(pc.fill_null(pc.equal(negs["reject_code"], str(ReasonCode.HARD_NEG)), False))
    column = next((c for c in DIFFICULTY_COLUMNS if c in negs.schema.names), None)
    if column is not None:
        diff = pc.cast(negs[column], pa.float64()).to_numpy(zero_copy_only=False)
        if np.isfinite(diff).any():
            out.plots.difficulty_kept, out.plots.difficulty_dropped = diff[kept], diff[dropped]
            values["difficulty_column"] = column
            values["difficulty_kept"] = distribution(diff[kept & np.isfinite(diff)])


def swap_metrics(negs: pa.Table, values: dict[str, Any], out: ReleaseMetrics, exact: tuple[int, int]) -> None:
    """The injected mismatches: each rule-based text negative (one attribute or word order
    changed) against its clean caption, scored by the same model on the same image.
    ``exact`` is (pairs, pairs whose mismatch scored below the clean caption) over every row;
    the distributions are of the sample."""
    if not {"positive_similarity", "negative_similarity"} <= set(negs.schema.names) or not exact[0]:
        return
    rule = pc.fill_null(pc.or_(pc.starts_with(negs[NEGATIVE_TYPE_COLUMN], "replace_"),
                               pc.starts_with(negs[NEGATIVE_TYPE_COLUMN], "swap_")), False)
    pairs = _mask(negs, rule)
    pos = pc.cast(pairs["positive_similarity"], pa.float64()).to_numpy(zero_copy_only=False)
    neg = pc.cast(pairs["negative_similarity"], pa.float64()).to_numpy(zero_copy_only=False)
    both = np.isfinite(pos) & np.isfinite(neg)
    out.plots.swap_clean, out.plots.swap_mismatched = pos[both], neg[both]
    values["clean_vs_swapped"] = {
        "pairs": exact[0], "clean": distribution(pos[both]), "swapped": distribution(neg[both]),
        "swapped_below_clean": exact[1] / exact[0]}
