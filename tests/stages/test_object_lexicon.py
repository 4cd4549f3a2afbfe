"""object_lexicon: mentions (synonyms, plurals, two-word names), markup, and the mirror rewrite."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stages.object_lexicon import (
    _ascii_spans,
    _regex_spans,
    canonical_object,
    find_object_mentions,
    label_profile,
    matching_boxes,
    plural,
    rewrite_left_right,
    rewrite_up_down,
    strip_markup,
    surface_forms,
)


def canon(text: str) -> list[tuple[str, bool]]:
    return [(m.canonical, m.plural) for m in find_object_mentions(text)]


def test_plural_rules() -> None:
    words = ("circle", "bus", "box", "puppy", "man", "sheep", "traffic light")
    assert [plural(w) for w in words] == [
        "circles", "buses", "boxes", "puppies", "men", "sheep", "traffic lights"]


def test_mentions_use_synonyms_plurals_and_two_word_names() -> None:
    assert canon("Two Circles, a kitten, three teddy bears and a traffic light.") == [
        ("circle", True), ("cat", False), ("teddy bear", True), ("traffic light", False)]
    assert canon("A woman rides a motorbike past people.") == [
        ("person", False), ("motorcycle", False), ("person", True)]


def test_mentions_respect_word_boundaries() -> None:
    assert canon("A cathedral, a dogma and a squared circled thing.") == []


def test_mentions_carry_colours_and_negation() -> None:
    m = find_object_mentions("There is no dog, but a small red circle.")
    assert [(x.canonical, x.negated, x.modifiers) for x in m] == [
        ("dog", True, ()), ("circle", False, ("small", "red"))]


def test_label_profile_and_matching() -> None:
    assert canonical_object("small red circle") == "circle"
    assert canonical_object("left lung nodule") == "nodule"
    assert canonical_object("Widget X") == "widget x"
    profiles = [label_profile("red circle"), label_profile("blue circle")]
    red, blue, plain, green = find_object_mentions("red circle, blue disc, circle, green circle")
    assert matching_boxes(red, profiles) == [0]
    assert matching_boxes(blue, profiles) == [1]
    assert matching_boxes(plain, profiles) == [0, 1]
    assert matching_boxes(green, profiles) == []


def test_strip_markup_keeps_offsets() -> None:
    content = "<|image_start|><IMG_TK_1><|image_end|> A <box>red circle</box> here."
    text = strip_markup(content)
    assert len(text) == len(content)
    assert text.split() == ["A", "red", "circle", "here."]


def test_rewrite_left_right_is_word_bounded_and_case_preserving() -> None:
    text = "Left of the bright square, LEFT and right; the leftmost copyright Right-hand."
    assert rewrite_left_right(text) == (
        "Right of the bright square, RIGHT and left; the rightmost copyright Left-hand.")


def test_rewrite_up_down() -> None:
    assert rewrite_up_down("Above the box, in front of the cat; Behind it, on top.") == (
        "Below the box, behind the cat; In front of it, on bottom.")


WORDS = ["left", "right", "Left", "RIGHT", "leftmost", "Rightmost", "above", "Below", "top",
         "BOTTOM", "in front of", "Behind", "upper", "lower", "over", "under", "bright", "circle",
         "the", "copyright", "lefty", ",", "."]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=20))
def test_any_rewrite_twice_is_identity(words: list[str]) -> None:
    text = " ".join(words)
    assert rewrite_left_right(rewrite_left_right(text)) == text
    assert rewrite_up_down(rewrite_up_down(text)) == text


_FORMS = sorted(surface_forms())
# Pieces that sit on the word lookup's edges: forms in any case, forms glued to word characters
# ("2cats", "cat_"), two-word forms split by several or odd whitespace or by punctuation.
_PIECES = st.one_of(
    st.sampled_from(_FORMS),
    st.sampled_from(_FORMS).map(str.upper),
    st.sampled_from(_FORMS).map(str.title),
    st.sampled_from(["traffic  light", "traffic\tlight", "traffic\nlights", "traffic-light", "stop\x1csign",
                     "Fire Hydrants", "teddy bear", "teddy", "2cats", "cat_", "_dog", "dog2", "it's", "bus's"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
    st.text(alphabet=" \t\n.,;:!?-'\"()[]0123456789_\x1c", min_size=1, max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_word_lookup_finds_what_the_regex_finds(text: str) -> None:
    """The fast path for ASCII text agrees with the lexicon regex on every span and form."""
    assert list(_ascii_spans(text)) == list(_regex_spans(text))


def test_non_ascii_text_keeps_the_regex_semantics() -> None:
    assert canon("A \u212aitten and a naïve dog") == [("cat", False), ("dog", False)]  # Kelvin sign K
