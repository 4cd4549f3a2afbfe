"""Cross-modal metrics over plain numpy arrays: retrieval recall and distribution summaries.

Nothing here reads a table (``pipeline.metrics.release`` does); every function takes arrays so
that it can be checked against an independent implementation on the same embeddings.

Retrieval follows the CLIP papers: every text has exactly one image; an image may have several
texts (its captions). text->image rank is the rank of the text's image among all images;
image->text rank is the best rank over the image's captions, counting only texts that are not
its captions. Ties count against the match (a candidate scoring *equal* to the true pair ranks
above it), so that degenerate embeddings (all equal) score chance, not perfect recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RECALL_KS: tuple[int, ...] = (1, 5, 10)
# Similarity rows computed at once: bounds memory to block x n_candidates float32.
_BLOCK = 1024


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (float16 embeddings overflow in dot products
    of long vectors less often in float32, and the ranks must not depend on precision)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def retrieval_ranks(image_emb: np.ndarray, text_emb: np.ndarray,
                    text_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(image->text ranks, text->image ranks)``, 1-based, cosine similarity.

    ``text_image[t]`` is the index of text ``t``'s image. Every image needs at least one text.
    """
    images, texts = unit_rows(image_emb), unit_rows(text_emb)
    owner = np.asarray(text_image, dtype=np.int64)
    n_img, n_txt = images.shape[0], texts.shape[0]
    if owner.shape != (n_txt,) or (n_txt and (owner.min() < 0 or owner.max() >= n_img)):
        raise ValueError("text_image must give one valid image index per text")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image and text embeddings differ in width: {images.shape[1]} vs "
                         f"{texts.shape[1]}")
    if np.bincount(owner, minlength=n_img).min(initial=1) == 0:
        raise ValueError("every image needs at least one text")
    t2i = np.empty(n_txt, dtype=np.int64)
    for start in range(0, n_txt, _BLOCK):
        sims = texts[start:start + _BLOCK] @ images.T
        true = sims[np.arange(sims.shape[0]), owner[start:start + _BLOCK]]
        t2i[start:start + _BLOCK] = (sims >= true[:, None]).sum(axis=1)  # includes the match
    i2t = np.empty(n_img, dtype=np.int64)
    for start in range(0, n_img, _BLOCK):
        block = np.arange(start, min(n_img, start + _BLOCK))
        sims = images[block] @ texts.T
        own = owner[None, :] == block[:, None]
        best = np.where(own, sims, -np.inf).max(axis=1)
        i2t[start:start + len(block)] = ((sims >= best[:, None]) & ~own).sum(axis=1) + 1
    return i2t, t2i


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``{"r@k": share of ranks <= k}``."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {}
    return {f"r@{k}": float((ranks <= k).mean()) for k in ks}


@dataclass(frozen=True)
class Recall:
    images: int
    texts: int
    image_to_text: dict[str, float]
    text_to_image: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "texts": self.texts,
                "image_to_text": self.image_to_text, "text_to_image": self.text_to_image}


def retrieval_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                     ks: Sequence[int] = RECALL_KS) -> Recall:
    """R@k both ways over one pool of images and their captions."""
    i2t, t2i = retrieval_ranks(image_emb, text_emb, text_image)
    return Recall(len(i2t), len(t2i), recall_from_ranks(i2t, ks), recall_from_ranks(t2i, ks))


def batched_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                   batch_images: int, ks: Sequence[int] = RECALL_KS) -> list[Recall]:
    """Recall inside consecutive pools of ``batch_images`` images (the "1k test set" figure):
    comparable across releases of different sizes, unlike recall over the whole release."""
    owner = np.asarray(text_image, dtype=np.int64)
    out = []
    for start in range(0, len(image_emb), batch_images):
        stop = min(len(image_emb), start + batch_images)
        mask = (owner >= start) & (owner < stop)
        out.append(retrieval_recall(image_emb[start:stop], text_emb[mask], owner[mask] - start, ks))
    return out


def summarise_batches(batches: Sequence[Recall]) -> dict[str, Any]:
    """Mean, min and max of each per-batch recall figure."""
    out: dict[str, Any] = {"batches": len(batches)}
    for direction in ("image_to_text", "text_to_image"):
        per_k: dict[str, dict[str, float]] = {}
        for k in getattr(batches[0], direction) if batches else ():
            values = [getattr(b, direction)[k] for b in batches]
            per_k[k] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                        "max": float(np.max(values))}
        out[direction] = per_k
    return out


def distribution(values: Sequence[float] | np.ndarray, bins: int = 20,
                 value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Count, mean, quantiles and a histogram of the finite values (non-finite ones are
    counted apart, never silently dropped)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"count": int(finite.size), "non_finite": int(arr.size - finite.size)}
    if finite.size == 0:
        return out
    q = np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95])
    counts, edges = np.histogram(finite, bins=bins, range=value_range)
    out.update(
        mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()),
        p05=float(q[0]), p25=float(q[1]), median=float(q[2]), p75=float(q[3]), p95=float(q[4]),
        max=float(finite.max()),
        histogram={"edges": [round(float(e), 9) for e in edges], "counts": [int(c) for c in counts]},
    )
    return out


def rate(part: int, whole: int) -> float | None:
    """``part / whole``, None for an empty whole (a rate of nothing is not 0)."""
    return part / whole if whole else None


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
