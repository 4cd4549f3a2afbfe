"""Document records: two or three pages of text blocks and figures, some pages in two columns.

Each figure is a PNG of one shape, and the text block right below it says which
("Figure 2 shows a large blue square."). Items are listed in source order, which here is the
true reading order: page by page, top to bottom, and on two-column pages the whole left column
before the right one. ``content`` is left empty for the interleaving stage to write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.world import render

PAGE_WIDTH, PAGE_HEIGHT = 612, 792
MARGIN = 56
COLUMN_GAP = 20
BLOCK_GAP = 14
LINE_HEIGHT = 18
CHAR_WIDTH = 6
FIGURE_PIXELS = (128, 96)
FIGURE_BOX_SIZE = (240, 180)
FIGURE_RADIUS = {"small": 16, "large": 34}
TWO_COLUMN_SHARE = 0.4
FIGURE_SHARE = 0.85
SHAPE_FACTS = {
    "circle": "A circle has no corners and one curved side.",
    "square": "A square has four equal sides and four corners.",
    "triangle": "A triangle has three sides and three corners.",
}


@dataclass(frozen=True)
class Figure:
    """One figure: its number in the document and the shape it shows."""

    number: int
    colour: str
    shape: str
    size: str

    def caption(self) -> str:
        phrase = f"{self.size} {self.colour} {self.shape}"
        article = "an" if phrase[:1] in "aeiou" else "a"
        return f"Figure {self.number} shows {article} {phrase}."


@dataclass(frozen=True)
class Block:
    """A text block or a figure placed on a page."""

    text: str | None = None
    figure: Figure | None = None


@dataclass(frozen=True)
class Page:
    """Groups of blocks that stay together (a figure and its caption) in source order."""

    number: int
    two_columns: bool
    groups: tuple[tuple[Block, ...], ...]


@dataclass(frozen=True)
class DocumentSpec:
    """Everything needed to render a document record."""

    record_id: str
    pages: tuple[Page, ...]

    @property
    def figures(self) -> list[Figure]:
        return [block.figure for page in self.pages for group in page.groups for block in group
                if block.figure is not None]


def plan_document(record_id: str, rng: np.random.Generator) -> DocumentSpec:
    """Pages, each with a section on one shape and usually a figure of that shape."""
    page_count = int(rng.integers(2, 4))
    colours = list(render.COLOURS_BGR)
    pages: list[Page] = []
    figure_count = 0
    for page_number in range(1, page_count + 1):
        shape = render.SHAPES[int(rng.integers(len(render.SHAPES)))]
        groups: list[tuple[Block, ...]] = []
        if page_number == 1:
            groups.append((Block(text="A short report on coloured shapes."),))
        groups.append((Block(text=f"Section {page_number} studies {shape}s. "
                                  f"{SHAPE_FACTS[shape]}"),))
        last_page_without_figures = page_number == page_count and figure_count == 0
        if last_page_without_figures or rng.random() < FIGURE_SHARE:
            figure_count += 1
            figure = Figure(
                number=figure_count,
                colour=colours[int(rng.integers(len(colours)))],
                shape=shape,
                size="large" if rng.random() < 0.5 else "small",
            )
            groups.append((Block(figure=figure), Block(text=figure.caption())))
        two_columns = bool(rng.random() < TWO_COLUMN_SHARE)
        if two_columns:
            groups.append((Block(text=f"{shape.capitalize()}s appear in many colours."),))
        pages.append(Page(page_number, two_columns, tuple(groups)))
    return DocumentSpec(record_id, tuple(pages))


def _block_height(block: Block, column_width: int) -> int:
    if block.figure is not None:
        return FIGURE_BOX_SIZE[1]
    chars_per_line = max(1, column_width // CHAR_WIDTH)
    return math.ceil(len(block.text or "") / chars_per_line) * LINE_HEIGHT


def layout_page(page: Page) -> list[tuple[Block, list[int]]]:
    """Blocks of a page with their ``[x1, y1, x2, y2]`` page boxes, in reading order."""
    if page.two_columns:
        column_width = (PAGE_WIDTH - 2 * MARGIN - COLUMN_GAP) // 2
        split = math.ceil(len(page.groups) / 2)
        columns = [(MARGIN, page.groups[:split]),
                   (MARGIN + column_width + COLUMN_GAP, page.groups[split:])]
    else:
        column_width = PAGE_WIDTH - 2 * MARGIN
        columns = [(MARGIN, page.groups)]
    placed: list[tuple[Block, list[int]]] = []
    for left, groups in columns:
        top = MARGIN
        for group in groups:
            for block in group:
                height = _block_height(block, column_width)
                width = FIGURE_BOX_SIZE[0] if block.figure is not None else column_width
                placed.append((block, [left, top, left + width, top + height]))
                top += height + BLOCK_GAP
    return placed


def render_figure(figure: Figure) -> np.ndarray:
    """BGR image of the one shape a figure shows, centred on paper."""
    width, height = FIGURE_PIXELS
    canvas = render.blank_canvas(width, height, render.PAPER_BGR)
    render.draw_shape(canvas, figure.shape, (width // 2, height // 2),
                      FIGURE_RADIUS[figure.size], render.COLOURS_BGR[figure.colour])
    return canvas


def build_document_record(
    spec: DocumentSpec, out_dir: Path, common: dict[str, object]
) -> dict[str, object]:
    """Render the figures and return the record (``content`` empty, ``items`` in source order)."""
    media: list[dict[str, object]] = []
    items: list[dict[str, object]] = []
    for page in spec.pages:
        for block, bbox in layout_page(page):
            if block.figure is None:
                items.append({"type": "text", "text": block.text, "page": page.number,
                              "bbox": bbox})
                continue
            uri = f"media/{spec.record_id}-fig-{block.figure.number}.png"
            sha256 = render.write_media(out_dir / uri,
                                        render.encode_png(render_figure(block.figure)))
            items.append({"type": "image", "media_index": len(media), "page": page.number,
                          "bbox": bbox})
            media.append({"modality": "image", "uri": uri, "sha256": sha256,
                          "width": FIGURE_PIXELS[0], "height": FIGURE_PIXELS[1]})
    return {
        "id": spec.record_id,
        "kind": "document",
        "content": "",
        "media": media,
        **common,
        "items": items,
    }
