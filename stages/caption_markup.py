"""Caption text out of a record's content: media spans and stray tokens removed, ``<box>x</box>``
unwrapped, character offsets kept (removed characters become spaces)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_SPAN_RE = re.compile(r"<\|(image|audio|video)_start\|>.*?<\|\1_end\|>", re.DOTALL)
_TOKEN_RE = re.compile(r"<\|[a-z_]+\|>|<(?:IMG|AUD|VID)_TK_\d+>")
BOX_TAG_RE = re.compile(r"<box>(.*?)</box>", re.DOTALL)


def strip_markup(content: str) -> str:
    """Caption text of ``content``: media spans and stray tokens removed, ``<box>x</box>`` -> x.
    Removed characters become spaces so that character offsets of the words are kept."""
    def blank(m: re.Match[str]) -> str:
        return " " * len(m.group(0))

    text = _SPAN_RE.sub(blank, content)
    text = _TOKEN_RE.sub(blank, text)
    return BOX_TAG_RE.sub(lambda m: "     " + m.group(1) + "      ", text)


def caption_texts(content: str | None, captions: Iterable[str | None] | None) -> list[str]:
    """The content (markup stripped) followed by the extra captions, skipping empty ones."""
    texts = [strip_markup(content)] if content else []
    texts.extend(c for c in (captions or ()) if c)
    return [t for t in texts if t.strip()]
