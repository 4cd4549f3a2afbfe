"""Stage ``negatives_text``: rule-based text negatives (subtle replacement, word-order swaps).

Consumes ok rows of the configured ``kinds`` (default object) that are not negatives
themselves: ``content`` (markup stripped) and ``captions`` are the positive captions. For each
caption it tries the configured strategies (in a seeded rotation, at most ``max_per_caption``)
and adds one row per negative: ``id`` ``<id>-txneg<k>``, ``parent_id`` = the source id,
``negative_type`` (the strategy), ``negative_text``, ``positive_text`` (the caption it came
from), ``negative_edit`` (what changed). The strategies (``replace_colour``, ``replace_size``,
``replace_count``, ``replace_object``, ``replace_spatial``, ``swap_nouns``, ``swap_adjectives``)
are the one-word edits of ``stages.caption_edits``, described there.

A result whose canonical form (:func:`canonical_words`: articles dropped, synonyms mapped to
one word) equals any positive caption of the row is never emitted. Source rows pass unchanged;
nothing is rejected (the false-negative filter, ``negatives_filter``, scores and drops).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from schemas.records import STATUS_OK
from stages.base import Resources, Stage, StageParams
from stages.caption_edits import (
    STRATEGIES,
    Strategy,
    TextNegative,
    canonical_words,
    clean_caption,
    positive_captions,
    seeded_rng,
)
from stages.negatives_mining import NEGATIVE_FIELDS


def text_negatives(captions: list[str], strategies: tuple[Strategy, ...], max_per_caption: int, seed: int,
                   row_id: str) -> list[tuple[str, TextNegative]]:
    """(positive caption, negative) pairs for one sample; never a positive nor a repeat."""
    positives = [clean_caption(c) for c in captions]
    seen = {canonical_words(c) for c in positives}
    out: list[tuple[str, TextNegative]] = []
    for ci, caption in enumerate(positives):
        rng = seeded_rng(seed, row_id, ci)
        order = list(strategies)
        shift = int(rng.integers(len(order))) if order else 0
        made = 0
        for name in order[shift:] + order[:shift]:
            if made >= max_per_caption:
                break
            negative = STRATEGIES[name](caption, rng)
            if negative is None or negative.text == caption:
                continue
            key = canonical_words(negative.text)
            if key in seen:
                continue
            seen.add(key)
            out.append((caption, negative))
            made += 1
    return out


class NegativesTextParams(StageParams):
    """Which strategies, how many per caption, on which kinds."""

    strategies: tuple[Strategy, ...] = Field(default=tuple(STRATEGIES), description="strategies to try, all by default")
    max_per_caption: int = Field(default=3, ge=1, le=16, description="negatives made per positive caption")
    kinds: tuple[str, ...] = Field(default=("object",), description="row kinds whose captions get negatives")
    seed: int = Field(default=0, description="seed of the strategy rotation and the word choices")


class NegativesText(Stage):
    """Subtle-replacement and word-order text negatives (see the module docstring)."""

    name: ClassVar[str] = "negatives_text"
    params_model: ClassVar[type[StageParams]] = NegativesTextParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=256)
    output_fields: ClassVar[tuple[pa.Field, ...]] = NEGATIVE_FIELDS
    params: NegativesTextParams

    def process(self, rows: pa.Table) -> pa.Table:
        p = self.params
        new_rows: list[dict[str, Any]] = []
        for row in rows.to_pylist():
            if row.get("kind") not in p.kinds or row.get("negative_type") is not None:
                continue
            made = text_negatives(positive_captions(row), p.strategies, p.max_per_caption, p.seed, row["id"])
            for k, (caption, negative) in enumerate(made):
                new_rows.append({
                    **row, "id": f"{row['id'][:116]}-txneg{k}", "parent_id": row["id"], "status": STATUS_OK,
                    "reject_stage": None, "reject_code": None, "reject_detail": None,
                    "negative_type": negative.strategy, "negative_text": negative.text, "negative_media": None,
                    "negative_edit": negative.edit, "positive_text": caption,
                })
        if not new_rows:
            return rows
        return pa.concat_tables([rows, pa.Table.from_pylist(new_rows, schema=rows.schema)])
