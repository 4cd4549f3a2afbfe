"""HTML pieces of the review page that show what a check read: an image with every box drawn
(an SVG overlay in screen pixels, so a box's pixels sit at its coordinates times the display
scale), text with ``<box>`` words and label mentions in the box's colour, and the spatial claims
``object_spatial`` reads from the text, each with whether the boxes hold it."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from pipeline.release.thumbnails import box_colour
from pipeline.review.media import Copied
from stages.object_lexicon import BOX_TAG_RE, caption_texts, label_profile
from stages.object_spatial import Claim, claim_violation, sentence_claims

DISPLAY_MAX_PX = 384
MAX_SCALE = 3.0
_SPAN_RE = re.compile(r"<\|(image|audio|video)_start\|>.*?<\|\1_end\|>", re.DOTALL)
_TOKEN_RE = re.compile(r"<\|[a-z_]+\|>|<(?:IMG|AUD|VID)_TK_\d+>")
_MARKUP_RE = re.compile(f"{_SPAN_RE.pattern}|{BOX_TAG_RE.pattern}|{_TOKEN_RE.pattern}", re.DOTALL)
_SENTENCE_RE = re.compile(r"[^.;!?\n]+")  # as object_spatial splits sentences


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def image_size(ref: dict[str, Any] | None, copied: Copied) -> tuple[int, int] | None:
    """(width, height): from the ref, else from the copied file's header."""
    if ref and ref.get("width") and ref.get("height"):
        return int(ref["width"]), int(ref["height"])
    if copied.local is None:
        return None
    from PIL import Image

    try:
        with Image.open(copied.local) as img:
            return int(img.size[0]), int(img.size[1])
    except OSError:
        return None


def display_scale(width: int, height: int) -> float:
    return min(MAX_SCALE, DISPLAY_MAX_PX / max(width, height, 1))


def boxed_figure(copied: Copied, size: tuple[int, int] | None, boxes: Sequence[Sequence[float]] | None,
                 labels: Sequence[str], caption: str) -> str:
    """The image with each box drawn in its colour and labelled; ``data-xyxy`` on a box holds its
    pixel coordinates in the image, ``data-scale`` on the frame the display scale."""
    if copied.rel is None:
        return f"<figure class='missing'><p class='note'>image {e(copied.uri)}: {e(copied.missing)}</p></figure>"
    if size is None:
        return f"<figure><img src='{e(copied.rel)}' alt='{e(caption)}'><figcaption>{e(caption)}</figcaption></figure>"
    w, h = size
    s = display_scale(w, h)
    dw, dh = round(w * s), round(h * s)
    shapes = []
    for i, box in enumerate(boxes or []):
        if box is None or len(box) != 4 or any(v is None or v != v for v in box):
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        dash = " stroke-dasharray='6 4'" if x2 <= x1 or y2 <= y1 else ""  # inverted or empty: drawn dashed
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        colour = box_colour(i)
        label = labels[i] if i < len(labels) else f"box {i}"
        lw = round(6.3 * len(label)) + 8  # about the width of 11 px sans-serif
        lx = max(0.0, min(x1 * s, dw - lw))  # kept inside the frame
        ly = max(0.0, y1 * s - 16)
        shapes.append(
            f"<g class='box' data-box='{i}' data-xyxy='{x1:g},{y1:g},{x2:g},{y2:g}' data-colour='{colour}'>"
            f"<rect x='{x1 * s:.1f}' y='{y1 * s:.1f}' width='{(x2 - x1) * s:.1f}' height='{(y2 - y1) * s:.1f}' "
            f"fill='none' stroke='{colour}' stroke-width='3' shape-rendering='crispEdges'{dash}/>"
            f"<rect x='{lx:.1f}' y='{ly:.1f}' width='{lw}' height='15' fill='{colour}'/>"
            f"<text x='{lx + 4:.1f}' y='{ly + 11.5:.1f}' fill='#fff' font-size='11'>{e(label)}</text></g>")
    return (f"<figure><div class='frame' style='width:{dw}px;height:{dh}px' data-scale='{s:g}' "
            f"data-size='{w},{h}'><img src='{e(copied.rel)}' width='{dw}' height='{dh}' alt='{e(caption)}'>"
            f"<svg width='{dw}' height='{dh}'>{''.join(shapes)}</svg></div>"
            f"<figcaption>{e(caption)} ({w}x{h} px, shown x{s:g})</figcaption></figure>")


def _box_mark(i: int, text: str) -> str:
    colour = box_colour(i)
    return (f"<mark class='boxword' data-box='{i}' style='background:{colour}33;"
            f"border-bottom:3px solid {colour}'>{e(text)}</mark>")


def content_html(content: str | None, labels: Sequence[str]) -> str:
    """``content`` with media spans as chips and each ``<box>`` word in its box's colour (the
    k-th tag goes to the first unused box with the same label, else to the k-th box); label
    mentions outside the tags are coloured as in the captions."""
    if not content:
        return "<span class='note'>(no content)</span>"
    used: set[int] = set()
    out, pos, order = [], 0, 0
    for m in _MARKUP_RE.finditer(content):
        out.append(mentions_html(content[pos:m.start()], labels))
        pos = m.end()
        if m.group(0).startswith("<box>"):
            word = BOX_TAG_RE.fullmatch(m.group(0))
            inner = word.group(1) if word else ""
            same = [i for i, lab in enumerate(labels) if lab.strip().lower() == inner.strip().lower() and i not in used]
            i = same[0] if same else order
            used.add(i)
            order += 1
            out.append(_box_mark(i, inner) if i < len(labels) else f"<mark class='boxword unmatched'>{e(inner)}</mark>")
        elif m.group(1):
            out.append(f"<span class='chip' title='{e(m.group(0))}'>[{e(m.group(1))}]</span>")
        else:
            out.append(f"<span class='chip token'>{e(m.group(0))}</span>")
    out.append(mentions_html(content[pos:], labels))
    return "".join(out)


def mentions_html(text: str | None, labels: Sequence[str]) -> str:
    """Plain text with every box label it mentions (whole words, any case) in the box's colour."""
    if not text:
        return ""
    spans: list[tuple[int, int, int]] = []
    for i in sorted(range(len(labels)), key=lambda j: -len(labels[j])):
        if not labels[i].strip():
            continue
        for m in re.finditer(rf"\b{re.escape(labels[i].strip())}\b", text, re.IGNORECASE):
            if all(m.end() <= a or m.start() >= b for a, b, _ in spans):
                spans.append((m.start(), m.end(), i))
    out, pos = [], 0
    for a, b, i in sorted(spans):
        out += [e(text[pos:a]), _box_mark(i, text[a:b])]
        pos = b
    return "".join(out) + e(text[pos:])


def spatial_claims(record: dict[str, Any], boxes: Sequence[Sequence[float]] | None,
                   size: tuple[int, int] | None) -> list[tuple[Claim, str | None]]:
    """Each claim object_spatial reads (default settings) with why the boxes contradict it."""
    labels = [(b or {}).get("label") or "" for b in record.get("boxes") or []]
    if not labels or boxes is None or size is None or len(boxes) != len(labels):
        return []
    profiles = [label_profile(label) for label in labels]
    claims = [c for text in caption_texts(record.get("content"), record.get("captions"))
              for sentence in _SENTENCE_RE.findall(text) for c in sentence_claims(sentence, profiles, True)]
    box_list = [list(b) for b in boxes]
    unique = list(dict.fromkeys(claims))  # the content and a caption often say the same thing
    return [(c, claim_violation(c, box_list, float(size[0]), float(size[1]), 2.0, 0.1)) for c in unique]


def claims_html(claims: list[tuple[Claim, str | None]], labels: Sequence[str]) -> str:
    if not claims:
        return "<p class='note'>No spatial claim the check can judge.</p>"
    items = []
    for c, why in claims:
        ref = f" of {_box_mark(c.reference, labels[c.reference])}" if c.reference is not None else " (in the image)"
        verdict = f"<span class='bad'>contradicted: {e(why)}</span>" if why else "<span class='good'>holds</span>"
        items.append(f"<li>{_box_mark(c.subject, labels[c.subject])} {e(c.relation)}{ref}: {verdict}"
                     f" <span class='note'>&ldquo;{e(c.sentence)}&rdquo;</span></li>")
    return f"<ul class='claims'>{''.join(items)}</ul>"
