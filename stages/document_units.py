"""A document as units of content: paragraphs and media items in their final order.

:class:`Unit` is one paragraph (with the images placed inside it) or one media item.
:func:`check_items` says what makes a document's items unusable; :func:`bonds` names the units
a token window must not cut apart (a media item and the paragraph that refers to it);
:func:`render` writes units as ``content``, ``media`` and ``items``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FIGURE_REF = re.compile(r"\b(?:fig(?:ure)?\.?|image)\s*(\d+)", re.IGNORECASE)


@dataclass
class Unit:
    """One paragraph (with any images placed inside it) or one media item, in final order."""

    text: str
    item: dict[str, Any]
    media: list[int] = field(default_factory=list)  # original media indices, in content order
    inline: list[dict[str, Any]] = field(default_factory=list)  # image items placed inside
    inline_before: bool = True  # inline image items are listed before the paragraph's item


def check_items(items: list[dict[str, Any]], media: list[dict[str, Any]]) -> str | None:
    """What makes a document's items unusable, or None."""
    if not items:
        return "document has no items"
    used: set[int] = set()
    for n, item in enumerate(items):
        kind = item.get("type")
        if kind == "text":
            continue
        idx = item.get("media_index")
        if idx is None or not 0 <= idx < len(media) or media[idx] is None:
            return f"items[{n}] ({kind}) has media_index {idx}, but the row has {len(media)} media ref(s)"
        if idx in used:
            return f"items[{n}] places media ref {idx} a second time"
        if media[idx].get("modality") != kind:
            return f"items[{n}] is {kind} but media ref {idx} is {media[idx].get('modality')}"
        used.add(idx)
    missing = [i for i in range(len(media)) if i not in used]
    return f"media ref(s) {missing} placed by no item" if missing else None


def bonds(units: list[Unit]) -> list[tuple[int, int]]:
    """Unit ranges a window must not cut: a media unit and the paragraph that refers to it."""
    out = []
    text_at = [i for i, u in enumerate(units) if u.item["type"] == "text"]
    ordinal = 0
    for i, unit in enumerate(units):
        if unit.item["type"] == "text":
            continue
        ordinal += unit.item["type"] == "image"
        page = unit.item.get("page")
        same_page = [j for j in text_at if units[j].item.get("page") == page]
        refs = [j for j in same_page if unit.item["type"] == "image"
                and any(int(m) == ordinal for m in FIGURE_REF.findall(units[j].text))]
        after = [j for j in same_page if j > i]
        before = [j for j in same_page if j < i]
        target = min(refs, key=lambda j: abs(j - i)) if refs else after[0] if after else before[-1] if before else None
        if target is not None:
            out.append((min(i, target), max(i, target)))
    return out


def render(units: Sequence[Unit], media: list[dict[str, Any]]) -> dict[str, Any]:
    """``content``, ``media`` (span order) and ``items`` (content order, remapped) of units."""
    order = [m for u in units for m in u.media]
    new_index = {old: new for new, old in enumerate(order)}
    items: list[dict[str, Any]] = []
    for u in units:
        inline = [{**it, "media_index": new_index[it["media_index"]]} for it in u.inline]
        own = u.item if u.item["type"] == "text" else {**u.item, "media_index": new_index[u.item["media_index"]]}
        items.extend(inline + [own] if u.inline and u.inline_before else [own] + inline)
    return {"content": "\n\n".join(u.text for u in units), "media": [media[m] for m in order], "items": items}
