"""Text records: plain sentences about shapes, without media or placeholders.

The sentences name shapes but never a colour with a shape, so that no text record can look like
a description of objects that are missing. Some are not ASCII, to exercise
``ensure_ascii=False`` end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT_SENTENCES: tuple[str, ...] = (
    "A triangle has three corners and three sides.",
    "A square has four equal sides.",
    "A circle has no corners at all.",
    "Shapes can be small or large.",
    "Un carré a quatre côtés égaux.",
    "Ein Dreieck hat drei Ecken — ein Kreis hat keine.",
    "正方形有四条边。",
    "Colours help to tell shapes apart.",
)


@dataclass(frozen=True)
class TextSpec:
    """The sentences of one text record."""

    record_id: str
    sentences: tuple[str, ...]


def plan_text(record_id: str, rng: np.random.Generator) -> TextSpec:
    """One to three distinct sentences."""
    count = int(rng.integers(1, 4))
    chosen = rng.choice(len(TEXT_SENTENCES), size=count, replace=False)
    return TextSpec(record_id, tuple(TEXT_SENTENCES[int(index)] for index in chosen))


def build_text_record(spec: TextSpec, common: dict[str, object]) -> dict[str, object]:
    """The record: plain ``content``, no media."""
    return {
        "id": spec.record_id,
        "kind": "text",
        "content": " ".join(spec.sentences),
        "media": [],
        **common,
    }
