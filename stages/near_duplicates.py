"""Near-duplicates (SemDeDup-style) and evaluation leakage on stored embeddings.

Duplicates: every signature with an embedding gets ``bands`` bucket keys, each the signs of its
vector against ``bits`` random hyperplanes (seeded by ``seed`` and the dimension, so every
worker draws the same ones). Two vectors at cosine c share a band's key with probability
``(1 - arccos(c) / pi) ** bits``; several bands make a near-duplicate pair meet in at least one
(c = 0.95, 10 bits, 8 bands: 97%). Inside a bucket rows are ranked -- the largest image first
(declared width x height, which ``media_check`` verified; a re-encoded, resized or cropped
copy never has more pixels than its source), then the highest score, then the smallest id --
and a row is a duplicate when a row ranked above it has cosine >= ``threshold`` (and, with
``caption_threshold``, a text cosine at least that). Its detail names the highest-ranked such
row, the one that is kept. Buckets larger than ``max_block_rows`` are split by more
hyperplanes, so no step computes more than ``max_block_rows`` squared cosines; no step
computes an N x N matrix over the dataset.

Leakage: an :class:`EvalIndex` per evaluation set (its rows' first image vectors and its
normalised captions of at least ``caption_min_words`` words); a row is leaked when its vector
has cosine >= ``threshold`` to an evaluation vector (blocked matmul, the evaluation set being
the small side) or one of its captions is an evaluation caption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.reason_codes import ReasonCode
from stages.caption_templates import rank_order
from stages.dataset_verdicts import unit_matrix, verdict_table

BUCKET_SCHEMA = pa.schema([("bucket", pa.int64()), ("ref", pa.string()), ("id", pa.string()),
                           ("pixels", pa.int64()), ("score", pa.float64()),
                           ("emb", pa.list_(pa.float16())), ("text_emb", pa.list_(pa.float16()))])
_CHUNK = 1024
_MAX_SPLITS = 12


def hyperplanes(dim: int, count: int, seed: int, stream: int = 0) -> np.ndarray:
    """(count, dim) float32 Gaussian hyperplanes, the same on every worker for these arguments."""
    return np.random.default_rng([seed, dim, stream]).standard_normal((count, dim)).astype(np.float32)


def band_buckets(sig: pa.Table, emb_column: str, text_column: str | None, bands: int, bits: int,
                 seed: int) -> pa.Table:
    """:data:`BUCKET_SCHEMA` rows: each signature with an embedding once per band, keyed
    ``band << 32 | signs``."""
    valid = [i for i, ok in enumerate(sig[emb_column].is_valid().to_pylist()) if ok]
    if not valid:
        return BUCKET_SCHEMA.empty_table()
    sig = sig.take(valid)
    emb = unit_matrix(sig[emb_column])
    signs = (emb @ hyperplanes(emb.shape[1], bands * bits, seed).T) >= 0
    weights = (1 << np.arange(bits, dtype=np.int64))
    keys = np.concatenate([(np.int64(b) << 32) | (signs[:, b * bits:(b + 1) * bits] @ weights)
                           for b in range(bands)])
    rows = np.tile(np.arange(sig.num_rows), bands)
    picked = sig.take(pa.array(rows))
    text = picked[text_column] if text_column else pa.nulls(len(rows), pa.list_(pa.float16()))
    return pa.Table.from_arrays([pa.array(keys, pa.int64()), picked["ref"], picked["id"],
                                 picked["pixels"], picked["score"], picked[emb_column], text],
                                schema=BUCKET_SCHEMA)


def keep_order(bucket: pa.Table) -> np.ndarray:
    """Positions of ``bucket``'s rows, the one to keep first: most pixels, then :func:`rank_order`."""
    pixels = bucket["pixels"].to_numpy(zero_copy_only=False)
    by_score = rank_order(bucket["score"].to_numpy(zero_copy_only=False),
                          bucket["id"].to_pylist(), bucket["ref"].to_pylist())
    return by_score[np.argsort(-pixels[by_score], kind="stable")]


def _split(bucket: pa.Table, max_rows: int, seed: int, depth: int = 0) -> list[pa.Table]:
    """``bucket`` cut by further hyperplanes until every piece has at most ``max_rows`` rows (or
    the cuts stop separating: near-identical vectors stay together)."""
    if bucket.num_rows <= max_rows or depth >= _MAX_SPLITS:
        return [bucket]
    emb = unit_matrix(bucket["emb"])
    band = int(bucket["bucket"][0].as_py()) >> 32
    side = (emb @ hyperplanes(emb.shape[1], 1, seed, stream=1000 + 64 * band + depth)[0]) >= 0
    halves = [bucket.filter(pa.array(side)), bucket.filter(pa.array(~side))]
    if min(h.num_rows for h in halves) == 0:
        return _split(bucket, max_rows, seed, depth + 1)
    return [piece for half in halves for piece in _split(half, max_rows, seed, depth + 1)]


def duplicate_verdicts(bucket: pa.Table, threshold: float, caption_threshold: float | None,
                       max_block_rows: int, seed: int) -> pa.Table:
    """Verdicts for the rows of one bucket (rows of :data:`BUCKET_SCHEMA` sharing ``bucket``)."""
    pieces = [_piece_verdicts(piece, threshold, caption_threshold, max_block_rows)
              for piece in _split(bucket, max_block_rows, seed)] if bucket.num_rows > 1 else []
    tables = [t for t in pieces if t.num_rows]
    return pa.concat_tables(tables) if tables else verdict_table([], "duplicate", ReasonCode.DUPLICATE, [])


def _text_matrix(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(unit text vectors with zeros where missing, valid mask)."""
    ok = np.asarray(column.is_valid().to_pylist(), bool)
    present = column.drop_null()
    if not len(present):
        return np.zeros((len(ok), 1), np.float32), ok
    text = np.zeros((len(ok), len(present[0].as_py())), np.float32)
    text[ok] = unit_matrix(present)
    return text, ok


def _piece_verdicts(piece: pa.Table, threshold: float, caption_threshold: float | None,
                    window: int) -> pa.Table:
    """Each row against the rows ranked above it; in a piece larger than ``window`` (vectors
    the hyperplanes could not separate) only against the ``window`` best-ranked rows."""
    if piece.num_rows < 2:
        return verdict_table([], "duplicate", ReasonCode.DUPLICATE, [])
    piece = piece.take(pa.array(keep_order(piece)))
    emb = unit_matrix(piece["emb"])
    text, text_ok = _text_matrix(piece["text_emb"]) if caption_threshold is not None else (None, None)
    ids, refs = piece["id"].to_pylist(), piece["ref"].to_pylist()
    pixels, scores = piece["pixels"].to_pylist(), piece["score"].to_pylist()
    out_refs, details, winners = [], [], []
    for start in range(1, piece.num_rows, _CHUNK):
        stop = min(start + _CHUNK, piece.num_rows)
        cols = min(stop, window)
        sims = emb[start:stop] @ emb[:cols].T
        hits = (np.arange(cols)[None, :] < np.arange(start, stop)[:, None]) & (sims >= threshold)
        if text is not None and text_ok is not None:
            hits &= text_ok[start:stop, None] & text_ok[None, :cols]
            hits &= (text[start:stop] @ text[:cols].T) >= caption_threshold
        for r in np.flatnonzero(hits.any(axis=1)):
            i, j = start + int(r), int(np.argmax(hits[r]))
            out_refs.append(refs[i])
            winners.append((pixels[j], scores[j], ids[j]))
            details.append(f"near-duplicate of {ids[j]} (image cosine {float(sims[r, j]):.4f} "
                           f">= {threshold:g}); {ids[j]} is kept (larger image, higher score or "
                           f"smaller id)")
    return verdict_table(out_refs, "duplicate", ReasonCode.DUPLICATE, details, winners)


@dataclass
class EvalIndex:
    """One evaluation set, ready to match: unit image vectors and captions with their row ids."""

    name: str
    ids: list[str] = field(default_factory=list)  # of the rows in ``emb``
    emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    texts: dict[str, str] = field(default_factory=dict)  # normalised caption -> first row id

    @property
    def rows(self) -> int:
        return len(self.ids) + len(self.texts)


def word_count(key: str) -> int:
    return len(key.split())


def leakage_verdicts(sig: pa.Table, indexes: list[EvalIndex], emb_column: str,
                     threshold: float, caption_min_words: int) -> pa.Table:
    """Verdicts for the signatures in ``sig`` that match a row of an evaluation set: by image
    first (in the order of ``indexes``), then by caption."""
    hits: dict[int, str] = {}
    valid = np.asarray(sig[emb_column].is_valid().to_pylist(), bool) if sig.num_rows else np.zeros(0, bool)
    rows = np.flatnonzero(valid)
    emb = unit_matrix(sig[emb_column].take(pa.array(rows))) if rows.size else None
    for index in indexes:
        if emb is None or not index.ids:
            continue
        if index.emb.shape[1] != emb.shape[1]:
            raise ValueError(f"evaluation set {index.name!r}: its {emb_column} vectors have "
                             f"{index.emb.shape[1]} dimensions, the rows' have {emb.shape[1]}")
        best = np.full(len(rows), -math.inf, np.float32)
        arg = np.zeros(len(rows), np.int64)
        for start in range(0, len(index.ids), 4 * _CHUNK):
            sims = emb @ index.emb[start:start + 4 * _CHUNK].T
            top = sims.argmax(axis=1)
            val = sims[np.arange(len(rows)), top]
            better = val > best
            best[better], arg[better] = val[better], start + top[better]
        for r in np.flatnonzero(best >= threshold):
            hits.setdefault(int(rows[r]), f"near-duplicate of evaluation row {index.ids[arg[r]]} of "
                            f"evaluation set {index.name!r} (image cosine {float(best[r]):.4f} "
                            f">= {threshold:g})")
    contents, captions = sig["content_key"].to_pylist(), sig["caption_keys"].to_pylist()
    for i, (content, caps) in enumerate(zip(contents, captions, strict=True)):
        if i in hits:
            continue
        keys = [k for k in [content, *(caps or [])] if k and word_count(k) >= caption_min_words]
        for index in indexes:
            found = next((k for k in keys if k in index.texts), None)
            if found is not None:
                hits[i] = (f"caption {found[:120]!r} is a caption of evaluation row "
                           f"{index.texts[found]} of evaluation set {index.name!r}")
                break
    refs = sig["ref"].to_pylist()
    picked = sorted(hits)
    return verdict_table([refs[i] for i in picked], "leakage", ReasonCode.DUPLICATE,
                         [hits[i] for i in picked])
