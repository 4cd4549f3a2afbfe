"""Counterfactual captions: every single-attribute change, each differing from its caption in
exactly the intended word (with its article), none equal in meaning to a true caption."""

from __future__ import annotations

import pytest

from stages.caption_edits import canonical_words
from stages.counterfactuals import counterfactuals

CAPTION = "Three shapes: a large red circle, a small orange square and a large blue triangle."
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple")


def changed_words(a: str, b: str) -> list[tuple[str, str]]:
    return [(x, y) for x, y in zip(a.split(), b.split(), strict=True) if x != y]


def test_size_flips_every_size_word_once() -> None:
    made = counterfactuals(CAPTION, ["size"])
    assert [c.edit for c in made] == ["size: large -> small", "size: small -> large", "size: large -> small"]
    assert made[0].text.startswith("Three shapes: a small red circle, a small orange square")
    for c in made:
        assert len(changed_words(CAPTION, c.text)) == 1


def test_colour_takes_every_other_colour_and_fixes_the_article() -> None:
    made = counterfactuals(CAPTION, ["colour"], colours=COLOURS)
    assert len(made) == 3 * 5
    plain = counterfactuals("A red circle and an orange square.", ["colour"], colours=COLOURS)
    texts = {c.edit: c.text for c in plain}
    assert texts["colour: red -> orange"] == "An orange circle and an orange square."
    assert texts["colour: orange -> green"] == "A red circle and a green square."
    for c in made:
        changes = changed_words(CAPTION, c.text)
        assert 1 <= len(changes) <= 2 and all(old in ("a", "an") or old.rstrip(",") in COLOURS
                                             for old, _ in changes)


def test_objects_skip_hypernyms_and_spatial_words_flip() -> None:
    objects = counterfactuals("The red square is left of the blue circle.", ["object"])
    assert "object: square -> rectangle" not in {c.edit for c in objects}
    assert "object: circle -> ellipse" not in {c.edit for c in objects}
    assert "object: square -> triangle" in {c.edit for c in objects}
    spatial = counterfactuals("The red square is left of the blue circle.", ["spatial"])
    assert [c.text for c in spatial] == ["The red square is right of the blue circle."]


def test_true_captions_and_synonyms_are_never_counterfactuals() -> None:
    other = "The red circle is small."
    made = counterfactuals("The red circle is large.", ["size", "colour"], positives=[other])
    assert all(canonical_words(c.text) != canonical_words(other) for c in made)
    assert "The red circle is small." not in {c.text for c in made}
    assert not any("maroon" in c.text for c in counterfactuals("A red circle.", ["colour"]))


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown counterfactual kinds"):
        counterfactuals(CAPTION, ["texture"])
