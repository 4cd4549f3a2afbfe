"""Reading order of document items (page by page, then column-aware layout within a page) and
the cut of an ordered document into token windows.

Pure helpers (numpy only) used by the ``document_interleave`` stage.

Within a page the columns are found from the items' bbox x-ranges: a gutter is an x-range that
no item covers. Items that cross a gutter (a title over two columns, a wide figure, a footer)
hide it, so when the union of all x-ranges has no gap the widest items are set aside, widest
first, until a gap shows up or fewer than two items are left; what is set aside and still
crosses a gutter is a *spanning* item. Spanning items cut the page into horizontal sections;
each section is read column by column, left to right, top to bottom inside a column, and the
spanning item that closes a section comes right after it.

A page where some item has no bbox (or a non-finite one) keeps its source order: with part of
the layout unknown, the source order is the better guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A gap narrower than this share of the page's content width is two boxes touching, not a gutter.
MIN_GUTTER_SHARE = 0.005


def column_intervals(boxes: np.ndarray, min_gutter_share: float = MIN_GUTTER_SHARE) -> list[tuple[float, float]]:
    """The columns of one page as ``(x_left, x_right)`` intervals, left to right.

    ``boxes`` is an ``(n, 4)`` array of ``[x1, y1, x2, y2]``. One interval means one column.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    x1, x2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    left, right = float(x1.min()), float(x2.max())
    min_gap = max(right - left, 0.0) * min_gutter_share
    widths = x2 - x1
    keep = np.ones(len(boxes), dtype=bool)
    while keep.sum() >= 2:
        intervals = _union(x1[keep], x2[keep], min_gap)
        if len(intervals) > 1:
            return intervals
        keep &= widths < widths[keep].max()  # set the widest aside (all ties at once)
    return [(left, right)]


def _union(x1: np.ndarray, x2: np.ndarray, min_gap: float) -> list[tuple[float, float]]:
    """Union of intervals; gaps of at most ``min_gap`` are closed."""
    order = np.argsort(x1, kind="stable")
    out: list[tuple[float, float]] = []
    for lo, hi in zip(x1[order].tolist(), x2[order].tolist(), strict=True):
        if out and lo - out[-1][1] <= min_gap:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def page_reading_order(boxes: np.ndarray) -> list[int]:
    """Indices of one page's boxes in reading order (see the module docstring)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return []
    x1, x2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y1, y2 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    columns = column_intervals(boxes)
    if len(columns) <= 1:
        return np.lexsort((np.arange(n), x1, y1)).tolist()
    overlap = np.array([[min(b, hi) - max(a, lo) for lo, hi in columns] for a, b in zip(x1, x2, strict=True)])
    touches = overlap > 0
    # An item in no column (it lies in a gutter) joins the column nearest to its centre.
    centre = (x1 + x2) / 2
    mids = np.array([(lo + hi) / 2 for lo, hi in columns])
    column = np.where(touches.any(axis=1), touches.argmax(axis=1), np.abs(centre[:, None] - mids).argmin(axis=1))
    spanning = touches.sum(axis=1) > 1
    span_idx = [int(i) for i in np.lexsort((x1, y1)) if spanning[i]]
    y_centre = (y1 + y2) / 2
    span_centres = np.array([y_centre[i] for i in span_idx])
    section = np.searchsorted(np.sort(span_centres), y_centre, side="right") if span_idx else np.zeros(n, int)
    order: list[int] = []
    for s in range(len(span_idx) + 1):
        members = [i for i in range(n) if not spanning[i] and section[i] == s]
        members.sort(key=lambda i: (column[i], y1[i], x1[i], i))
        order.extend(members)
        if s < len(span_idx):
            order.append(span_idx[s])
    return order


def reading_order(pages: Sequence[int], bboxes: Sequence[Sequence[float] | None]) -> list[int]:
    """Indices of a document's items in reading order: by page (stable), then by layout.

    ``pages[i]`` and ``bboxes[i]`` describe item ``i``; a page with any missing or non-finite
    bbox keeps its source order.
    """
    if len(pages) != len(bboxes):
        raise ValueError(f"{len(pages)} pages for {len(bboxes)} bboxes")
    by_page: dict[int, list[int]] = {}
    for i, page in enumerate(pages):
        by_page.setdefault(int(page), []).append(i)
    order: list[int] = []
    for page in sorted(by_page):
        members = by_page[page]
        raw = [bboxes[i] for i in members]
        if any(b is None or len(b) != 4 for b in raw):
            order.extend(members)
            continue
        boxes = np.asarray(raw, dtype=np.float64)
        if not np.isfinite(boxes).all():
            order.extend(members)
            continue
        order.extend(members[j] for j in page_reading_order(boxes))
    return order


def window_ranges(tokens: Sequence[int], bonds: Sequence[tuple[int, int]], budget: int | None) -> list[tuple[int, int]]:
    """``[start, end)`` unit ranges of the windows: cuts only between units not joined by a
    bond ``(lo, hi)`` (units lo..hi stay together), blocks packed greedily up to ``budget``."""
    n = len(tokens)
    if budget is None or sum(tokens) <= budget or n == 0:
        return [(0, n)]
    joined = np.zeros(n + 1, dtype=bool)  # joined[i]: no cut between unit i-1 and unit i
    for lo, hi in bonds:
        joined[lo + 1 : hi + 1] = True
    starts = [i for i in range(n) if not joined[i]]
    blocks = list(zip(starts, starts[1:] + [n], strict=True))
    windows: list[tuple[int, int]] = []
    start, used = 0, 0
    for a, b in blocks:
        size = sum(tokens[a:b])
        if used and used + size > budget:
            windows.append((start, a))
            start, used = a, 0
        used += size
    windows.append((start, n))
    return windows
