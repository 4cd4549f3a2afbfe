"""Grammar v1: one test per rule, and the fast batch path held equal to the reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.placeholder_grammar import lint_content, span
from schemas.placeholders import PlaceholderLinter

VOCAB = {"image": 8192, "audio": 1000, "video": 16}
LINTER = PlaceholderLinter(VOCAB)
IMG = [("image", None)]


def rule(content: str, media: list[tuple[str, int | None]] = IMG, **kw: bool) -> str | None:
    ref = lint_content(content, media, VOCAB, **kw)
    fast = LINTER.check(content, media, **kw)
    assert (ref is None) == (fast is None), (content, ref, fast)
    return ref.rule if ref else None


@pytest.mark.parametrize(
    "content, expected",
    [
        (span("image") + " A red circle.", None),
        ("plain text, no media < 3 and a | pipe", "span_count"),
        ("&lt;|image_start|&gt;<|image_pad|><|image_end|>", "escaped_sentinel"),
        ("&amp;lt;|image_start|&amp;gt;<|image_pad|><|image_end|>", "escaped_sentinel"),
        ("\\u003c|image_start|>x", "escaped_sentinel"),
        ("\\\\u003c|image_start|>x", "escaped_sentinel"),
        ("＜|image_start|＞<|image_pad|><|image_end|>", "escaped_sentinel"),
        ("<｜image_start｜><|image_pad|><|image_end|>", "escaped_sentinel"),
        ("%3C%7Cimage_start%7C%3E", "escaped_sentinel"),
        ("<IMG_TK_1><|image_end|>", "token_outside_span"),
        ("<|image_pad|><|image_end|>", "token_outside_span"),
        ("<|image_end|>", "unpaired_end"),
        ("<|image_start|><|image_pad|>", "unclosed_span"),
        ("<|image_start|><|image_end|>", "empty_span"),
        ("<|image_start|><|image_start|><|image_pad|><|image_end|><|image_end|>", "nested_span"),
        ("<|image_start|><|image_pad|><|audio_end|>", "mismatched_end"),
        ("<|image_start|><IMG_TK_1><|image_pad|><|image_end|>", "mixed_body"),
        ("<|image_start|><AUD_TK_1><|image_end|>", "wrong_modality"),
        ("<|image_start|> <|image_pad|><|image_end|>", "text_in_span"),
        ("<|image_start|><IMG_TK_8192><|image_end|>", "vocab"),
        ("<|image_start|><IMG_TK_8191><|image_end|>", None),
        ("<|image_start|><IMG_TK_007><|image_end|>", "malformed_token"),
        ("<|image_start|><IMG_TK_x1><|image_end|>", "malformed_token"),
        ("<|image_start|><|image_pad|><|image_end|><|user|>", "unknown_sentinel"),
        ("<|image_start|><box>a</box><|image_end|>", "box_in_span"),
        (span("image") + " <box>a <box>b</box></box>", "box_nested"),
        (span("image") + " a</box>", "box_unpaired"),
        (span("image") + " <box>a", "box_unpaired"),
        (span("image") + " <box> </box>", "box_empty"),
        (span("image") + " <box>red circle</box> left of a <box>blue square</box>", None),
    ],
)
def test_each_rule(content: str, expected: str | None) -> None:
    assert rule(content) == expected


def test_span_count_and_num_tokens_follow_media_order() -> None:
    media = [("image", 2), ("audio", None), ("image", 3)]
    good = span("image", 2) + span("audio") + " text " + span("image", ids=[1, 2, 3])
    assert rule(good, media) is None
    assert rule(span("image", 2) + span("audio") + span("image", 2), media) == "num_tokens"
    assert rule(span("image", 2) + span("image", 3), media) == "span_count"
    assert rule(span("video") + good, media) == "span_count"


def test_vocab_is_per_modality() -> None:
    media = [("video", None), ("audio", None)]
    assert rule(span("video", ids=[15]) + span("audio", ids=[999]), media) is None
    assert rule(span("video", ids=[16]) + span("audio", ids=[999]), media) == "vocab"
    assert rule(span("video", ids=[15]) + span("audio", ids=[1000]), media) == "vocab"


def test_empty_document_content_skips_span_count() -> None:
    assert LINTER.check_many([""], [[("image", None)]], ["document"]) == [None]
    assert LINTER.check_many([""], [[("image", None)]], ["object"])[0] is not None


def test_messages_name_the_problem() -> None:
    v = lint_content("<|image_start|><IMG_TK_451><IMG_TK_152104><|image_end|>", [("image", 2)], VOCAB)
    assert v is not None and v.detail == "token id 152104 >= image vocab 8192"
    v = lint_content("<IMG_TK_451> <IMG_TK_882> <|image_end|> x", [("image", 2)], VOCAB)
    assert v is not None and "missing <|image_start|>" in v.detail
    v = lint_content("&lt;|image_start|&gt;<|image_pad|><|image_end|>", IMG, VOCAB)
    assert v is not None and v.detail.startswith("HTML-escaped start sentinel")


PIECES = st.sampled_from(
    [
        "<|image_start|>",
        "<|image_end|>",
        "<|image_pad|>",
        "<|audio_start|>",
        "<|audio_end|>",
        "<|audio_pad|>",
        "<|video_start|>",
        "<|video_end|>",
        "<IMG_TK_0>",
        "<IMG_TK_8191>",
        "<IMG_TK_8192>",
        "<AUD_TK_999>",
        "<AUD_TK_1000>",
        "<VID_TK_15>",
        "<VID_TK_16>",
        "<IMG_TK_01>",
        "<box>",
        "</box>",
        "red circle",
        " ",
        "<",
        ">",
        "|",
        "<|",
        "|>",
        "&lt;",
        "&gt;",
        "<|x|>",
        "image_start",
        "＜",
        "｜",
        "\\u003c",
        "\n",
        "é",
        "\u00a0",
        "\v",
        "\t",
    ]
)
MEDIA = st.lists(st.tuples(st.sampled_from(["image", "audio", "video"]), st.none() | st.integers(1, 3)), max_size=3)


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=12).map("".join), MEDIA)
def test_fast_path_equals_reference(content: str, media: list[tuple[str, int | None]]) -> None:
    ref = lint_content(content, media, VOCAB)
    fast = LINTER.check(content, media)
    assert (ref is None) == (fast is None)
    if ref is not None:
        assert fast == ref


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["image", "audio", "video"]), st.integers(1, 4), st.booleans()), max_size=4),
    st.text(alphabet=st.characters(blacklist_characters="<>|&\\＜｜%"), max_size=20),
)
def test_generated_valid_content_passes(spans: list[tuple[str, int, bool]], text: str) -> None:
    content = text.join(span(m, n) if pads else span(m, ids=list(range(n))) for m, n, pads in spans) + text
    media = [(m, n) for m, n, _ in spans]
    assert LINTER.check(content, media) is None


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        PIECES
        | st.sampled_from(
            [
                "&#60;",
                "&#x3C;",
                "%3c%7c",
                "IMG_TK_",
                "&amp;lt;",
                "﹤",
                "IMAGE_START",
                "\t",
                "\u00a0",
                "\u2003",
                "&#60;|",
            ]
        ),
        max_size=10,
    ).map("".join)
)
def test_escaped_pattern_same_in_re2_and_python(content: str) -> None:
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas.placeholder_grammar import ESCAPED_PATTERN

    re2 = pc.match_substring_regex(pa.array([content]), ESCAPED_PATTERN)[0].as_py()
    assert re2 == bool(re.search(ESCAPED_PATTERN, content))


def test_batch_check_equals_row_check() -> None:
    contents = [span("image"), "&lt;|image_start|&gt;", None, span("image", ids=[9000])]
    media = [IMG, IMG, IMG, IMG]
    batch = LINTER.check_many(contents, media)
    assert [v.rule if v else None for v in batch] == [None, "escaped_sentinel", "missing_content", "vocab"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(PIECES, max_size=10).map("".join) | st.none(), MEDIA, st.sampled_from(["object", "document"])
        ),
        min_size=1,
        max_size=8,
    )
)
def test_columns_path_equals_row_path(rows: list[tuple[str | None, list[tuple[str, int | None]], str]]) -> None:
    import pyarrow as pa

    from schemas.records import MEDIA_TYPE

    contents = [c for c, _, _ in rows]
    media = [[{"modality": m, "uri": "x", "num_tokens": n} for m, n in refs] for _, refs, _ in rows]
    kinds = [k for _, _, k in rows]
    columns = LINTER.check_columns(
        pa.array(contents, pa.string()), pa.array(media, pa.list_(MEDIA_TYPE)), pa.array(kinds)
    )
    assert columns == LINTER.check_many(contents, [refs for _, refs, _ in rows], kinds)


def test_columns_path_in_threads_on_a_large_batch() -> None:
    import random

    import pyarrow as pa

    from schemas.records import MEDIA_TYPE

    rng = random.Random(0)
    pieces = PIECES.wrapped_strategy.elements if hasattr(PIECES, "wrapped_strategy") else None
    options = [
        "<|image_start|>",
        "<|image_pad|>",
        "<|image_end|>",
        "<IMG_TK_5>",
        "<IMG_TK_9000>",
        "<box>",
        "</box>",
        "a",
        " ",
    ]
    contents = [
        span("image", rng.randint(1, 3)) + "".join(rng.choice(options) for _ in range(rng.randint(0, 4)))
        for _ in range(5000)
    ]
    media = [[{"modality": "image", "uri": "x", "num_tokens": rng.choice([None, 1, 2])}] for _ in contents]
    specs = [[("image", refs[0]["num_tokens"])] for refs in media]
    got = LINTER.check_columns(
        pa.array(contents), pa.array(media, pa.list_(MEDIA_TYPE)), pa.array(["object"] * len(contents))
    )
    assert got == LINTER.check_many(contents, specs, ["object"] * len(contents))
    assert 0 < sum(v is None for v in got) < len(got)
    del pieces
