"""Text negatives: each strategy changes exactly its attribute, keeps grammar, never a synonym."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.run.ingest import read_manifest
from pipeline.world import generate_world
from stages.caption_edits import (
    AGREEMENT,
    COLOUR_FAMILY,
    NUMBERS,
    SIZE_FAMILY,
    SPATIAL_SWAP,
    STRATEGIES,
    canonical_words,
    clean_caption,
    positive_captions,
    replace_colour,
    replace_count,
    replace_object,
    replace_size,
    replace_spatial,
    seeded_rng,
    swap_adjectives,
    swap_nouns,
)
from stages.negatives_text import NegativesText
from stages.object_lexicon import ATTRIBUTES, COLOURS, find_object_mentions, plural, surface_forms
from stages.registry import get_stage_class
from tests.stages.object_rows import object_record, object_table

ARTICLES = {"a", "an"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", text.lower())


def changed(before: str, after: str) -> list[tuple[int, str, str]]:
    """(position, old, new) of the words that differ; the word counts must be equal."""
    a, b = words(before), words(after)
    if len(a) != len(b):
        ops = difflib.SequenceMatcher(a=a, b=b).get_opcodes()
        raise AssertionError(f"word count changed: {ops}")
    return [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def without_articles(diff: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The changes that are not a/an fixes; an article fix must sit right before a change."""
    main = [d for d in diff if not (d[1] in ARTICLES and d[2] in ARTICLES)]
    for i, _, _ in (d for d in diff if d not in main):
        assert any(j == i + 1 for j, _, _ in main), f"article changed away from any edit: {diff}"
    return main


def object_of(word: str) -> str | None:
    return surface_forms().get(word, (None, False))[0]


def check_exactly_one_attribute(strategy: str, before: str, after: str) -> None:
    """The contract of each strategy, checked on the words of the two captions."""
    assert canonical_words(before) != canonical_words(after)
    diff = without_articles(changed(before, after))
    if strategy == "replace_colour":
        [(_, old, new)] = diff
        assert old in COLOURS and new in COLOURS and COLOUR_FAMILY[old] != COLOUR_FAMILY[new]
    elif strategy == "replace_size":
        [(_, old, new)] = diff
        assert SIZE_FAMILY[old] != SIZE_FAMILY[new]
    elif strategy == "replace_spatial":
        [(_, old, new)] = diff
        assert SPATIAL_SWAP[old] == new
    elif strategy == "replace_object":
        [(_, old, new)] = diff
        assert object_of(old) is not None and object_of(new) is not None and object_of(old) != object_of(new)
    elif strategy == "replace_count":
        (_, old, new), *rest = diff
        assert old in NUMBERS and new in NUMBERS and old != new
        for _, w_old, w_new in rest:  # one X is -> two Xs are
            assert old == "one" and (w_new == plural(w_old) or AGREEMENT.get(w_old) == w_new), diff
    elif strategy in ("swap_nouns", "swap_adjectives"):
        [(_, a_old, a_new), (_, b_old, b_new)] = diff
        if strategy == "swap_adjectives":
            assert (a_new, b_new) == (b_old, a_old)
            assert a_old in COLOURS | set(SIZE_FAMILY) and b_old in COLOURS | set(SIZE_FAMILY)
        else:
            assert (object_of(a_new), object_of(b_new)) == (object_of(b_old), object_of(a_old))
    else:
        raise AssertionError(strategy)


@pytest.mark.parametrize(("strategy", "caption", "seed", "expected", "edit"), [
    ("replace_colour", "One shape: an orange triangle.", 0, "One shape: a green triangle.",
     "colour: orange -> green"),
    ("replace_size", "Two shapes: a small red circle and a large blue square.", 0,
     "Two shapes: a large red circle and a large blue square.", "size: small -> large"),
    ("replace_count", "One red circle is above the square.", 0, "Five red circles are above the square.",
     "count: one -> five"),
    ("replace_count", "Two shapes: a small red circle and a large blue square.", 0,
     "Three shapes: a small red circle and a large blue square.", "count: two -> three"),
    ("replace_spatial", "The L marker is on the left side of the film.", 0,
     "The L marker is on the right side of the film.", "spatial: left -> right"),
    ("replace_spatial", "The green square is above the red circle.", 0, "The green square is below the red circle.",
     "spatial: above -> below"),
    ("swap_nouns", "Two shapes: a small red circle and two large blue squares.", 0,
     "Two shapes: a small red square and two large blue circles.", "nouns: circle <-> square"),
    ("swap_adjectives", "An orange circle is left of a red square.", 0, "A red circle is left of an orange square.",
     "adjectives: orange <-> red"),
])
def test_each_strategy_on_known_captions(strategy: str, caption: str, seed: int, expected: str, edit: str) -> None:
    negative = STRATEGIES[strategy](caption, seeded_rng(seed, caption))
    assert negative is not None
    assert (negative.text, negative.strategy, negative.edit) == (expected, strategy, edit)
    check_exactly_one_attribute(strategy, caption, negative.text)


def test_colour_replacement_fixes_the_article_both_ways() -> None:
    seen = set()
    for seed in range(60):
        neg = replace_colour("A red circle.", np.random.default_rng(seed))
        assert neg is not None
        new = neg.edit.split(" -> ")[1]
        assert neg.text == ("An " if new[0] in "aeiou" else "A ") + new + " circle."
        seen.add(neg.text[:2])
    assert seen == {"A ", "An"}


def test_object_replacement_keeps_group_article_and_number_and_never_a_hypernym() -> None:
    for seed in range(40):
        neg = replace_object("An apple is on the bench.", np.random.default_rng(seed))
        assert neg is not None
        new_object = neg.edit.split(" -> ")[1]
        if neg.edit.startswith("object: apple"):
            assert new_object not in ("circle", "square", "lesion") and new_object != "apple"
            assert neg.text.startswith(("An " if new_object[0] in "aeiou" else "A ") + new_object + " is")
        square = replace_object("Three squares.", np.random.default_rng(seed))
        assert square is not None and square.text.startswith("Three ") and square.text.endswith("s.")
        assert square.text.split()[1] not in ("squares.", "rectangles.", "diamonds.")


def test_no_candidate_means_no_negative() -> None:
    rng = np.random.default_rng(0)
    assert replace_colour("A circle.", rng) is None
    assert replace_size("A red circle.", rng) is None
    assert replace_count("One of the circles.", rng) is None
    assert replace_spatial("The man left the room.", rng) is None
    assert swap_nouns("A circle and a disc.", rng) is None  # synonyms: swapping changes nothing
    assert swap_adjectives("A grey circle and a gray square.", rng) is None


def test_canonical_words_map_synonyms_and_drop_articles() -> None:
    assert canonical_words("A grey disc is over the sofa.") == canonical_words("the gray circle is above a couch")
    assert canonical_words("Two circles") == canonical_words("2 circles") != canonical_words("two circle")
    assert canonical_words("A red circle") != canonical_words("A blue circle")


def test_lexicon_words_all_have_families() -> None:
    assert set(COLOUR_FAMILY) == set(COLOURS)
    assert set(SIZE_FAMILY) <= ATTRIBUTES


def test_sample_world_negatives_change_exactly_the_intended_attribute(tmp_path: Path) -> None:
    world = generate_world(tmp_path / "world", 80, 0.0, 3)
    table = read_manifest(str(world.manifest_path))
    out = NegativesText({"max_per_caption": 7})(table)
    rows = out.to_pylist()
    sources = {r["id"]: r for r in rows if r["negative_type"] is None}
    negatives = [r for r in rows if r["negative_type"] is not None]
    assert len(sources) == table.num_rows and out.num_rows == table.num_rows + len(negatives)
    assert {r["negative_type"] for r in negatives} == set(STRATEGIES)
    for neg in negatives:
        parent = sources[neg["parent_id"]]
        assert parent["kind"] == "object" and neg["id"].startswith(parent["id"] + "-txneg")
        assert neg["status"] == "ok" and neg["content"] == parent["content"]
        positives = positive_captions(parent)
        assert neg["positive_text"] in positives
        assert canonical_words(neg["negative_text"]) not in {canonical_words(p) for p in positives}
        check_exactly_one_attribute(neg["negative_type"], neg["positive_text"], neg["negative_text"])
    assert len({r["id"] for r in rows}) == len(rows)
    again = NegativesText({"max_per_caption": 7})(table)
    assert again.equals(out)


def test_stage_skips_other_kinds_and_negative_rows(tmp_path: Path) -> None:
    record = object_record(tmp_path, "o1", [("red circle", [10, 10, 50, 50], "pascal_voc")], "A <box>red circle</box>.",
                           captions=["The red circle is small."])
    table = object_table([record], tmp_path)
    out = NegativesText({"strategies": ["replace_colour"], "max_per_caption": 1})(table)
    assert [(r["id"], r["negative_text"], r["positive_text"]) for r in out.to_pylist()[1:]] == [
        ("o1-txneg0", "A yellow circle.", "A red circle."),
        ("o1-txneg1", "The white circle is small.", "The red circle is small."),
    ]
    assert NegativesText({"kinds": ["text"]})(table).num_rows == 1
    assert NegativesText()(out.slice(1)).num_rows == 2  # negatives are never negated again
    assert clean_caption("  A  <x> red circle . ") == "A <x> red circle."
    assert get_stage_class("negatives_text") is NegativesText
    assert [m.canonical for m in find_object_mentions(out["negative_text"][1].as_py())] == ["circle"]
