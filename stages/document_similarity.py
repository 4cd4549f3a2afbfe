"""Image x sentence similarity for ``document_interleave`` (placement ``assign``).

A :data:`Similarity` takes RGB uint8 images (``H x W x 3``) and sentences and returns an
``(images, sentences)`` float matrix, higher = more alike. Two are available:

* ``clip``: :class:`ClipSimilarity`, an open_clip checkpoint loaded and preprocessed as the
  ``clip_score`` stage does (``access.models``), imported lazily so that the layout
  placement never loads torch;
* ``shape_colour_rules``: :func:`shape_colour_similarity`, a transparent rule-based
  **test/demo stand-in**, not a model. It reads one dominant shape from the pixels (colour,
  shape from its contour, size) and counts how many of those three the sentence names. It
  works on the sample world's figures (one filled shape on plain paper) and on nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Similarity = Callable[[list[np.ndarray], list[str]], np.ndarray]

# Basic colour names and a typical RGB for each; an image's colour is the nearest one.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circles", "disc", "discs"),
    "square": ("square", "squares"),
    "triangle": ("triangle", "triangles"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"large": ("large", "big"), "small": ("small", "little")}
_WORD = re.compile(r"[a-z]+")
FOREGROUND_DISTANCE = 40  # max per-channel difference from the background colour
LARGE_SHARE = 0.5  # a shape whose longer side exceeds half the image's shorter side is "large"


@dataclass(frozen=True)
class FigureTraits:
    """What the rule-based stand-in reads from a figure's pixels."""

    colour: str
    shape: str
    size: str


def figure_traits(rgb: np.ndarray) -> FigureTraits | None:
    """Colour, shape and size of the largest foreground blob, or None when there is none.

    Background = median colour of the border pixels; foreground = pixels more than
    ``FOREGROUND_DISTANCE`` away from it in some channel. Shape from the fill ratio of the
    largest contour within its bounding rectangle: ~1 square, ~pi/4 circle, ~1/2 triangle.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] < 3 or min(rgb.shape[:2]) < 4:
        return None
    rgb = rgb[:, :, :3].astype(np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    mask = (np.abs(rgb - background).max(axis=2) > FOREGROUND_DISTANCE).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    x, y, w, h = cv2.boundingRect(contour)
    area = float(mask[y : y + h, x : x + w].sum())
    if area < 16:
        return None
    fill = area / float(w * h)
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    blob = np.zeros_like(mask)
    cv2.drawContours(blob, [contour], -1, 1, thickness=-1)
    inner = cv2.erode(blob & mask, np.ones((3, 3), np.uint8))  # anti-aliased edges blend in paper
    pixels = rgb[(inner if inner.any() else mask).astype(bool)]
    median = np.median(pixels, axis=0)
    names = list(COLOUR_RGB)
    palette = np.array([COLOUR_RGB[n] for n in names], dtype=np.float64)
    colour = names[int(np.argmin(((palette - median) ** 2).sum(axis=1)))]
    size = "large" if max(w, h) > LARGE_SHARE * min(rgb.shape[:2]) else "small"
    return FigureTraits(colour, shape, size)


def sentence_words(sentence: str) -> set[str]:
    return set(_WORD.findall(sentence.lower()))


def trait_score(traits: FigureTraits | None, words: set[str]) -> float:
    """Share of the figure's three traits (colour, shape, size) that the sentence names."""
    if traits is None:
        return 0.0
    hits = (traits.colour in words) + bool(words & set(SHAPE_WORDS[traits.shape])) + bool(
        words & set(SIZE_WORDS[traits.size])
    )
    return hits / 3.0


def shape_colour_similarity(images: list[np.ndarray], sentences: list[str]) -> np.ndarray:
    """Test/demo stand-in for CLIP (see the module docstring): ``(images, sentences)`` scores
    in ``[0, 1]``, the share of a figure's colour, shape and size that a sentence names."""
    traits = [figure_traits(image) for image in images]
    words = [sentence_words(s) for s in sentences]
    out = np.zeros((len(images), len(sentences)), dtype=np.float64)
    for i, t in enumerate(traits):
        for j, w in enumerate(words):
            out[i, j] = trait_score(t, w)
    return out


class ClipSimilarity:
    """Cosines of an open_clip checkpoint (loaded once), with the preprocessing ``clip_score``
    uses: ``decode_media``'s geometric transform, the model's mean/std, norm-clipped features."""

    def __init__(self, checkpoint: str, sha256: str | None = None, device: str = "auto") -> None:
        from access.models import load_open_clip, resolve_checkpoint
        from stages.decode_media import geometric_transform
        from stages.scoring import pick_device

        self.device = pick_device(device)
        self.bundle = load_open_clip(resolve_checkpoint(checkpoint, sha256), self.device)
        b = self.bundle
        self.transform = geometric_transform(b.image_size, b.resize_mode, b.interpolation, b.fill_color)

    def __call__(self, images: list[np.ndarray], sentences: list[str]) -> np.ndarray:
        import torch
        from PIL import Image

        from stages.scoring import unit_features

        if not images or not sentences:
            return np.zeros((len(images), len(sentences)))
        pixels = np.stack([np.asarray(self.transform(Image.fromarray(np.ascontiguousarray(i[:, :, :3]))))
                           for i in images])
        x = self.bundle.model_input(torch.from_numpy(pixels).to(self.device))
        tokens = self.bundle.tokenizer(sentences).to(self.device)
        with torch.inference_mode():
            image, _ = unit_features(self.bundle.model.encode_image(x), 1e4)
            text, _ = unit_features(self.bundle.model.encode_text(tokens), 1e4)
        return np.asarray((image @ text.T).cpu().numpy(), dtype=np.float64)


def load_similarity(name: str, checkpoint: str | None, sha256: str | None = None) -> Similarity:
    """The similarity named in the stage params; ``clip`` loads ``checkpoint`` (torch and
    open_clip are imported only here)."""
    if name == "shape_colour_rules":
        return shape_colour_similarity
    if name != "clip":
        raise ValueError(f"unknown similarity {name!r}; use clip or shape_colour_rules")
    if not checkpoint:
        raise ValueError("similarity=clip needs clip_checkpoint")
    return ClipSimilarity(checkpoint, sha256)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the sentences of a paragraph: a sentence ends at
    ``.``, ``!`` or ``?`` (and closing quotes/brackets) followed by whitespace, or at the end."""
    spans: list[tuple[int, int]] = []
    for m in re.finditer(r"\S.*?(?:[.!?][\"')\]]*(?=\s)|$)", text, flags=re.DOTALL):
        spans.append((m.start(), m.end()))
    return spans


def sentence_texts(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    return [text[a:b] for a, b in spans]
