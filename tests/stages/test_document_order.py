"""Reading order: pages first, then columns found from the bbox x-ranges, top to bottom inside a
column; spanning items (titles, footers) cut a page into sections."""

from __future__ import annotations

import numpy as np
import pytest

from stages.document_order import column_intervals, page_reading_order, reading_order
from tests.stages.document_rows import world_documents


@pytest.fixture(scope="module")
def world_docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return world_documents(tmp_path_factory.mktemp("world"), seed=5).to_pylist()


def _is_two_column_page(items: list[dict], page: int) -> bool:
    lefts = {i["bbox"][0] for i in items if i["page"] == page}
    return len(lefts) > 1


def test_sample_world_shuffled_items_come_back_in_reading_order(world_docs: list[dict]) -> None:
    # the sample world lists items in true reading order; shuffling them must not matter
    rng = np.random.default_rng(0)
    two_column_pages = 0
    for doc in world_docs:
        items = doc["items"]
        shuffled = rng.permutation(len(items)).tolist()
        got = reading_order([items[i]["page"] for i in shuffled], [items[i]["bbox"] for i in shuffled])
        assert [shuffled[k] for k in got] == list(range(len(items))), doc["id"]
        two_column_pages += sum(_is_two_column_page(items, p) for p in {i["page"] for i in items})
    assert len(world_docs) >= 20 and two_column_pages >= 10


def test_two_columns_under_a_title_and_above_a_footer() -> None:
    # the first blocks of both columns end at the same height: a naive horizontal cut would
    # read left-1, right-1, left-2, ...
    title = [50, 40, 550, 70]
    left = [[50, 90, 290, 130], [50, 150, 290, 300], [50, 320, 290, 360]]
    right = [[310, 90, 550, 130], [310, 150, 550, 200]]
    footer = [50, 700, 550, 720]
    boxes = [footer, right[1], left[2], title, right[0], left[0], left[1]]
    names = ["footer", "r2", "l3", "title", "r1", "l1", "l2"]
    order = page_reading_order(np.array(boxes, float))
    assert [names[i] for i in order] == ["title", "l1", "l2", "l3", "r1", "r2", "footer"]
    assert column_intervals(np.array(boxes, float)) == [(50.0, 290.0), (310.0, 550.0)]


def test_a_full_width_block_between_two_column_sections() -> None:
    top_left, top_right = [50, 40, 290, 200], [310, 40, 550, 120]
    middle = [50, 220, 550, 260]
    low_left, low_right = [50, 280, 290, 300], [310, 280, 550, 400]
    boxes = np.array([low_right, middle, top_right, low_left, top_left], float)
    names = ["low_right", "middle", "top_right", "low_left", "top_left"]
    assert [names[i] for i in page_reading_order(boxes)] == ["top_left", "top_right", "middle", "low_left", "low_right"]


def test_unequal_columns_main_text_and_sidebar() -> None:
    # the main column is wider than half the page, and a title hides the gutter
    boxes = np.array([[420, 60, 560, 100], [40, 60, 400, 300], [40, 10, 560, 40], [420, 120, 560, 180],
                      [40, 320, 400, 500]], float)
    assert page_reading_order(boxes) == [2, 1, 4, 0, 3]


def test_one_column_page_reads_top_to_bottom() -> None:
    boxes = np.array([[40, 320, 560, 350], [40, 100, 300, 300], [40, 40, 560, 80]], float)
    assert column_intervals(boxes) == [(40.0, 560.0)]
    assert page_reading_order(boxes) == [2, 1, 0]


def test_pages_sorted_and_a_page_without_bboxes_keeps_source_order() -> None:
    pages = [2, 1, 2, 1]
    bboxes = [None, [40, 300, 560, 320], [40, 40, 560, 80], [40, 40, 560, 80]]
    # page 1 by layout (3 before 1); page 2 has an item without bbox: source order (0 before 2)
    assert reading_order(pages, bboxes) == [3, 1, 0, 2]
    assert reading_order([1, 1], [[0, 0, 1, float("nan")], [0, 0, 1, 1]]) == [0, 1]
    assert reading_order([], []) == []
