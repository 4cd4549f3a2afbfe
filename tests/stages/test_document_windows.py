"""document_interleave token windows: cut at paragraph boundaries, never inside a span, each
window carrying the images its text refers to; and the token counter."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.run.local_runner import run_stages
from stages.document_interleave import DocumentInterleave
from stages.document_order import window_ranges
from stages.document_tokens import TokenCounter
from tests.stages.document_rows import SPAN_RE, figure_numbers, lint, shuffle_items, world_documents

BUDGET = 25  # above every paragraph and every figure + caption of the sample world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return shuffle_items(world_documents(tmp_path_factory.mktemp("world"), seed=8))


@pytest.mark.parametrize("placement", ["layout", "assign"])
def test_windows_never_split_a_span_and_carry_their_figures(world: pa.Table, placement: str) -> None:
    params = {"placement": placement, "similarity": "shape_colour_rules", "max_tokens": BUDGET}
    out = run_stages(world, [DocumentInterleave(params)]).table
    parents = out.filter(pc.is_null(out["parent_id"])).to_pylist()
    windows = out.filter(pc.is_valid(out["parent_id"])).to_pylist()
    assert len(parents) == world.num_rows and {r["status"] for r in parents + windows} == {"ok"}
    assert [r["id"] for r in parents] == world["id"].to_pylist()  # source rows first, in order
    split = [p for p in parents if p["doc_windows"] > 1]
    assert len(split) >= 10
    for parent in parents:
        mine = [w for w in windows if w["parent_id"] == parent["id"]]
        if parent["doc_windows"] == 1:
            assert mine == [] and parent["doc_tokens"] <= BUDGET
            continue
        assert [w["id"] for w in mine] == [f"{parent['id']}-w{k}" for k in range(parent["doc_windows"])]
        assert [w["doc_window"] for w in mine] == list(range(len(mine)))
        # the windows are the document cut at paragraph boundaries, nothing lost or repeated
        assert "\n\n".join(w["content"] for w in mine) == parent["content"]
        assert [m for w in mine for m in w["media"]] == parent["media"]
        assert sum(w["doc_tokens"] for w in mine) == parent["doc_tokens"] > BUDGET
        for w in mine:
            assert lint(w) is None, w["id"]  # every span whole, one span per media ref
            assert w["doc_tokens"] <= BUDGET
            assert not SPAN_RE.sub("", w["content"]).count("<|")
            for number in figure_numbers(w):  # the caption of each figure is in its window
                assert re.search(rf"\bFigure {number} shows\b", w["content"]), (w["id"], number)
            assert [i["media_index"] for i in w["items"] if i["type"] == "image"] == list(range(len(w["media"])))


def test_window_ranges_cut_only_where_no_bond_holds() -> None:
    assert window_ranges([5, 5, 5, 5], [], None) == [(0, 4)]
    assert window_ranges([5, 5, 5, 5], [], 20) == [(0, 4)]
    assert window_ranges([5, 5, 5, 5], [], 10) == [(0, 2), (2, 4)]
    assert window_ranges([5, 5, 5, 5], [(1, 2)], 10) == [(0, 1), (1, 3), (3, 4)]
    # a block over the budget becomes a window of its own, never cut
    assert window_ranges([3, 30, 3], [], 10) == [(0, 1), (1, 2), (2, 3)]
    assert window_ranges([2, 2, 2, 9], [(0, 3)], 10) == [(0, 4)]
    assert window_ranges([], [], 10) == [(0, 0)]


def test_whitespace_tokens_count_each_marker_once() -> None:
    counter = TokenCounter()
    text = "a b <|image_start|><|image_pad|><|image_pad|><|image_end|>c <box>cat</box>"
    assert counter.count([text, "", "  one\ttwo\nthree  "]) == [3 + 4 + 1 + 2, 0, 3]
    assert counter.count_column(pa.array([None, "x"])).tolist() == [0, 1]


def test_a_tokenizer_file_from_the_config_counts_the_text(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "red": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation off: "circle." = 2
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    counter = TokenCounter(str(path))
    assert counter.count(["a red circle.", "<|image_start|><|image_pad|><|image_end|>"]) == [4, 3]
    table = pa.Table.from_pylist([{"id": "d", "kind": "document", "content": "", "status": "ok", "items": [
        {"type": "text", "text": "One, two.", "page": 1}, {"type": "text", "text": "Three.", "page": 1}]}])
    one = DocumentInterleave({"tokenizer": str(path), "max_tokens": 4})(table).to_pylist()
    assert [(r["id"], r["doc_tokens"]) for r in one] == [("d", 6), ("d-w0", 4), ("d-w1", 2)]
