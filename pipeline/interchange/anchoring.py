"""Captions with their objects anchored: ``<box>name</box>`` around the words that name a box.

``object_anchor`` compares a tag's text with the box labels literally (case-insensitive), so a
tag is only ever put around the literal label ("dog", not "dogs" or "puppy"); each label is
tagged at its first mention, which is all the anchoring check asks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Characters that would be read as markup inside a caption: the placeholder linter rejects
# sentinel look-alikes, so a caption that already holds markup is left as it is.
_MARKUP_RE = re.compile(r"<\|[a-z_]+\|>|</?box>", re.IGNORECASE)


def anchor_labels(caption: str, labels: Iterable[str]) -> str:
    """``caption`` with the first literal mention of each label (word boundaries, any case)
    wrapped in ``<box>...</box>``; longer labels first, so "traffic light" wins over "light"."""
    if _MARKUP_RE.search(caption):
        return caption
    taken: list[tuple[int, int]] = []
    for label in sorted({" ".join(x.split()) for x in labels if x.strip()}, key=lambda x: (-len(x), x)):
        words = [re.escape(w) for w in label.split()]
        pattern = re.compile(r"(?<![\w<])" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)
        for m in pattern.finditer(caption):
            if not any(a < m.end() and m.start() < b for a, b in taken):
                taken.append((m.start(), m.end()))
                break
    out, last = [], 0
    for start, end in sorted(taken):
        out += [caption[last:start], "<box>", caption[start:end], "</box>"]
        last = end
    out.append(caption[last:])
    return "".join(out)
