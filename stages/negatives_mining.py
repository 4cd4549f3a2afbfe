"""Hard-negative mining on plain arrays: blocked kNN top-k and the false-negative rules.

Nothing here reads a row or loads a model. :func:`mine_topk` ranks, for every query embedding,
the most similar key embeddings without ever holding a queries x keys matrix: keys are taken in
blocks (converted to float32 one block at a time), queries in blocks, and a running top-k per
query is merged block by block. Memory is ``O(query_block * key_block + queries * k)`` on top of
the inputs, whatever the number of keys.

:func:`false_negative_verdicts` applies the positive-aware rules to candidate negatives (NV-Retriever
style): a candidate is kept only when ``s_neg < ratio * s_pos`` (``s_pos`` is the lowest positive
when a sample has several captions), ``s_neg`` is under an absolute ceiling, and, when a margin
is set, ``s_pos - s_neg >= margin``; candidates from the same sample (same image, augmented
siblings) and near-duplicates of a positive are never negatives. :func:`cap_per_positive` keeps the
hardest ``max_per_positive`` survivors of each positive.

The negative columns (shared by every negatives stage) and :func:`false_negative_rate` are here
too, so that release and metrics code reads them without importing torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ---- columns of negative rows -------------------------------------------------------------
NEGATIVE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("negative_type", pa.string()),  # strategy; set on every negative row
    pa.field("negative_text", pa.string()),  # text side: the negative caption
    pa.field("negative_media", pa.string()),  # image side: uri of the edited/other image
    pa.field("negative_edit", pa.string()),  # what changed, e.g. "colour: red -> blue"
    pa.field("positive_text", pa.string()),  # the caption of the positive pair
)
SCORE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("negative_similarity", pa.float64()),
    pa.field("positive_similarity", pa.float64()),
    pa.field("negative_verdict", pa.string()),  # "kept" or the rule that dropped it
    pa.field("negative_source_id", pa.string()),  # mined: the row the candidate came from
    pa.field("negative_batch", pa.string()),
    pa.field("negative_batch_fn_rate", pa.float64()),
)

KEPT = "kept"
SAME_SAMPLE = "same_sample"
DUPLICATE = "duplicate"
CEILING = "ceiling"
POSITIVE_AWARE = "positive_aware"
MARGIN = "margin"
OVER_CAP = "over_cap"
# Drops that mean "probably not a negative at all"; over_cap drops are true negatives in excess.
FALSE_NEGATIVE_VERDICTS: frozenset[str] = frozenset({SAME_SAMPLE, DUPLICATE, CEILING, POSITIVE_AWARE, MARGIN})


class TopK(NamedTuple):
    """Per query: ``scores`` (descending, float32) and key ``indices`` (int64); ``-inf``/``-1``
    pad the rows that have fewer than ``k`` eligible keys."""

    scores: np.ndarray
    indices: np.ndarray


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy of a 2-D array (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _mask_own(scores: Any, q_own: Any, k_own: Any) -> None:
    """Set ``scores[i, j] = -inf`` where ``q_own[i] == k_own[j]``, touching only the key columns
    whose owner is in the query block (a dense bq x bk comparison costs a quarter of the matmul)."""
    import torch

    cols = torch.isin(k_own, q_own).nonzero().squeeze(1)
    if cols.numel():
        rows, at = (q_own[:, None] == k_own[cols][None, :]).nonzero(as_tuple=True)
        scores[rows, cols[at]] = float("-inf")


def mine_topk(queries: Any, keys: Any, k: int, *, query_owner: Sequence[int] | np.ndarray | None = None,
              key_owner: Sequence[int] | np.ndarray | None = None, query_block: int = 1024,
              key_block: int = 16384) -> TopK:
    """Top-``k`` keys by dot product for every query (cosine when both are normalised).

    ``queries`` (n, d) and ``keys`` (m, d) are numpy arrays or torch tensors of any float dtype
    (float16 stays float16 in memory; each block is computed in float32). Where ``query_owner``
    and ``key_owner`` are given, a key whose owner equals the query's owner is never returned
    (a sample's own captions are its positives, not candidates)."""
    import torch

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with warnings.catch_warnings():  # read-only arrays (Arrow buffers) are fine: nothing writes to them
        warnings.simplefilter("ignore", UserWarning)
        q = torch.as_tensor(queries)
        kt = torch.as_tensor(keys)
    if q.ndim != 2 or kt.ndim != 2 or q.shape[1] != kt.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(kt.shape)} must be (n, d) and (m, d)")
    if (query_owner is None) != (key_owner is None):
        raise ValueError("give both query_owner and key_owner, or neither")
    n, m = q.shape[0], kt.shape[0]
    q_own = None if query_owner is None else torch.as_tensor(np.asarray(query_owner, np.int64))
    k_own = None if key_owner is None else torch.as_tensor(np.asarray(key_owner, np.int64))
    best_s = torch.full((n, k), float("-inf"), dtype=torch.float32)
    best_i = torch.full((n, k), -1, dtype=torch.int64)
    with torch.inference_mode():
        for ks in range(0, m, key_block):
            kb = kt[ks:ks + key_block].to(torch.float32)  # (bk, d): each key block converted once
            kk = min(k, kb.shape[0])
            for qs in range(0, n, query_block):
                qe = min(n, qs + query_block)
                scores = q[qs:qe].to(torch.float32) @ kb.T
                if q_own is not None and k_own is not None:
                    _mask_own(scores, q_own[qs:qe], k_own[ks:ks + kb.shape[0]])
                top_s, top_i = torch.topk(scores, kk, dim=1)
                merged_s = torch.cat([best_s[qs:qe], top_s], dim=1)
                merged_i = torch.cat([best_i[qs:qe], top_i + ks], dim=1)
                keep_s, pos = torch.topk(merged_s, k, dim=1)
                best_s[qs:qe] = keep_s
                best_i[qs:qe] = torch.gather(merged_i, 1, pos)
    scores_np = best_s.numpy()
    indices_np = best_i.numpy()
    indices_np[~np.isfinite(scores_np)] = -1
    return TopK(scores_np, indices_np)


def sample_groups(members: Sequence[tuple[str, str | None]]) -> tuple[list[int], dict[str, int]]:
    """Group entries that show the same sample: ``members`` are (root id, image key or None) and
    two entries are one group when they share either, transitively (an augmented copy of a row
    and another row with that row's image file are one group). Returns each entry's group and
    the group of every ``r:<root>`` / ``i:<image key>`` node."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for root, image in members:
        a = find(f"r:{root}")
        if image is not None:
            b = find(f"i:{image}")
            if a != b:
                parent[b] = a
    labels: dict[str, int] = {}
    nodes = {node: labels.setdefault(find(node), len(labels)) for node in list(parent)}
    return [nodes[f"r:{root}"] for root, _ in members], nodes


def lowest_positive(image_emb: np.ndarray, caption_embs: np.ndarray) -> tuple[float, int]:
    """The lowest positive similarity of one image among its captions, and that caption's index."""
    sims = np.asarray(caption_embs, np.float32) @ np.asarray(image_emb, np.float32)
    at = int(np.argmin(sims))
    return float(sims[at]), at


class FilterRules(NamedTuple):
    """The false-negative rules: keep ``s_neg < ratio * s_pos`` and ``s_neg < ceiling``, and
    ``s_pos - s_neg >= margin`` when a margin is set."""

    ratio: float = 0.95
    ceiling: float = 0.75
    margin: float | None = None


def false_negative_verdicts(s_neg: np.ndarray, s_pos: np.ndarray, same_sample: np.ndarray,
                            duplicate: np.ndarray, rules: FilterRules) -> np.ndarray:
    """One verdict per candidate: ``kept`` or the first rule that drops it, in the order
    same_sample, duplicate, ceiling, positive_aware, margin."""
    s_neg = np.asarray(s_neg, np.float64)
    s_pos = np.asarray(s_pos, np.float64)
    verdicts = np.full(len(s_neg), KEPT, dtype=object)
    checks = [
        (SAME_SAMPLE, np.asarray(same_sample, bool)),
        (DUPLICATE, np.asarray(duplicate, bool)),
        (CEILING, ~(s_neg < rules.ceiling)),
        (POSITIVE_AWARE, ~(s_neg < rules.ratio * s_pos)),
    ]
    if rules.margin is not None:
        checks.append((MARGIN, ~(s_pos - s_neg >= rules.margin)))
    for name, dropped in reversed(checks):  # the first rule in the list wins
        verdicts[dropped] = name
    return verdicts


def cap_per_positive(keys: Sequence[Hashable], s_neg: np.ndarray, verdicts: np.ndarray,
                     max_per_positive: int) -> np.ndarray:
    """Keep the hardest (highest ``s_neg``) ``max_per_positive`` kept candidates of each key
    (one key per positive pair); the others become ``over_cap``. Ties keep the earlier one."""
    out = np.asarray(verdicts, dtype=object).copy()
    order = np.lexsort((np.arange(len(out)), -np.asarray(s_neg, np.float64)))
    taken: dict[Hashable, int] = {}
    for i in order:
        if out[i] != KEPT:
            continue
        count = taken.get(keys[i], 0)
        if count >= max_per_positive:
            out[i] = OVER_CAP
        else:
            taken[keys[i]] = count + 1
    return out


def drop_detail(verdict: str, s_neg: float, s_pos: float, rules: FilterRules, max_per_positive: int) -> str:
    """The ``reject_detail`` of a dropped candidate: the rule and its scores."""
    scores = f"s_neg {s_neg:.4f}, s_pos {s_pos:.4f}"
    if verdict == SAME_SAMPLE:
        return f"likely false negative: same image or augmented sibling of the anchor ({scores})"
    if verdict == DUPLICATE:
        return f"likely false negative: near-duplicate of a positive caption ({scores})"
    if verdict == CEILING:
        return f"likely false negative: s_neg {s_neg:.4f} >= ceiling {rules.ceiling:g} (s_pos {s_pos:.4f})"
    if verdict == POSITIVE_AWARE:
        return f"likely false negative: s_neg {s_neg:.4f} >= {rules.ratio:g} x s_pos {s_pos:.4f}"
    if verdict == MARGIN:
        return f"likely false negative: margin s_pos - s_neg = {s_pos - s_neg:.4f} < {rules.margin:g} ({scores})"
    if verdict == OVER_CAP:
        return f"over the cap of {max_per_positive} negatives per positive ({scores})"
    raise ValueError(f"not a drop verdict: {verdict!r}")


# ---- the rate that the quality gate reads --------------------------------------------------
def _verdict_counts(table: pa.Table, by_batch: bool) -> dict[str | None, tuple[int, int]]:
    if "negative_verdict" not in table.column_names:
        return {}
    verdicts = table["negative_verdict"].to_pylist()
    batches = table["negative_batch"].to_pylist() if by_batch and "negative_batch" in table.column_names else [
        None] * len(verdicts)
    counts: dict[str | None, tuple[int, int]] = {}
    for verdict, batch in zip(verdicts, batches, strict=True):
        if verdict is None:
            continue
        scored, dropped = counts.get(batch, (0, 0))
        counts[batch] = (scored + 1, dropped + (verdict in FALSE_NEGATIVE_VERDICTS))
    return counts


def false_negative_rate(table: pa.Table) -> float:
    """Share of scored negative candidates (rows with ``negative_verdict`` set) that were dropped
    as likely false negatives (``negative_verdict`` in :data:`FALSE_NEGATIVE_VERDICTS`; their
    ``reject_code`` is ``ERR_CROSS_MDL_HARD_NEG``). ``over_cap`` drops count as scored, not as
    false negatives. 0.0 when nothing was scored."""
    scored, dropped = _verdict_counts(table, by_batch=False).get(None, (0, 0))
    return dropped / scored if scored else 0.0


def batch_false_negative_rates(table: pa.Table) -> dict[str, float]:
    """The false-negative rate of each filter batch (``negative_batch``), for the per-batch gate."""
    return {str(b): d / s for b, (s, d) in sorted(_verdict_counts(table, by_batch=True).items(), key=str) if s}


def false_negative_gate(table: pa.Table, max_rate: float) -> tuple[bool, str]:
    """(passed, sentence): fails when any batch's false-negative rate is above ``max_rate``."""
    rates = batch_false_negative_rates(table)
    over = {b: r for b, r in rates.items() if r > max_rate}
    if not over:
        worst = max(rates.values(), default=0.0)
        return True, f"false-negative rate at most {worst:.3f} per batch ({len(rates)} batches), limit {max_rate:g}"
    worst_batch = max(over, key=lambda b: over[b])
    return False, (f"{len(over)} of {len(rates)} batches above the false-negative limit {max_rate:g} "
                   f"(worst {worst_batch}: {over[worst_batch]:.3f})")


def is_negative_row(table: pa.Table) -> np.ndarray:
    """Boolean mask of rows that are negative pairs (``negative_type`` set)."""
    if "negative_type" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return np.asarray(pc.is_valid(table["negative_type"]).to_numpy(zero_copy_only=False), dtype=bool)
