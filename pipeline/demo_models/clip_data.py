"""What the demo CLIP is trained on: its reduced vocabulary and its stream of rendered scenes.

The vocabulary is open_clip's BPE cut to its first ``FIRST_MERGES`` merges plus every merge the
sample world's words need (:func:`reduced_bpe`: the words tokenize exactly as with the full
vocabulary), which keeps the fp16 checkpoint a few MB.

Examples are rendered exactly as ``decode_media`` prepares images (open_clip's eval transform,
``squash`` to ``IMAGE_SIZE`` px) with the texts that ``clip_score`` scores (object content and
captions, document figure captions, segment sentences): :func:`example`. Scenes are drawn fresh
every step, so nothing is seen twice; :class:`Steps` draws step ``s`` from its own generator, so
any number of render workers gives the same stream, and each image comes with swapped copies of
its caption (``pipeline.demo_models.clip_eval.swap_caption``) as hard negatives.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo_models.clip_eval import SWAP_KINDS, clean, swap_caption, to_model_pixels, words

IMAGE_SIZE, RESIZE_MODE, INTERPOLATION = 64, "squash", "bicubic"
FIRST_MERGES = 2048
SIZES = ("large", "small")


# ---- tokenizer --------------------------------------------------------------------------------
def merges_used(texts: list[str]) -> set[tuple[str, str]]:
    """The BPE merges that open_clip's tokenizer applies to the words of ``texts``."""
    import open_clip
    import regex

    tok = open_clip.SimpleTokenizer()
    used: set[tuple[str, str]] = set()
    for text in texts:
        for token in regex.findall(tok.pat, tok.clean_fn(text)):
            chars = "".join(tok.byte_encoder[b] for b in token.encode("utf-8"))
            word = (*chars[:-1], chars[-1] + "</w>")
            while len(word) > 1:
                pairs = {(a, b) for a, b in zip(word, word[1:], strict=False)}
                best = min(pairs, key=lambda p: tok.bpe_ranks.get(p, math.inf))
                if best not in tok.bpe_ranks:
                    break
                used.add(best)
                merged, i = [], 0
                while i < len(word):
                    if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                        merged.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        merged.append(word[i])
                        i += 1
                word = tuple(merged)
    return used


def reduced_bpe(texts: list[str], first: int = FIRST_MERGES) -> bytes:
    """gzip'd merges file: the first ``first`` merges plus those ``texts`` need, in rank order."""
    import open_clip

    lines = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    needed = {" ".join(m) for m in merges_used(texts)}
    kept = [m for i, m in enumerate(merges) if i < first or m in needed]
    return gzip.compress(("#version: xmodal-reduced\n" + "\n".join(kept)).encode(), mtime=0)


# ---- training examples -------------------------------------------------------------------------
def example(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[str], set[tuple[str, str]]]:
    """One rendered BGR image, its true texts and its (colour, shape) labels: an object scene
    (80%), a document figure (15%) or a segment frame (5%)."""
    from pipeline.world import render
    from pipeline.world.documents import Figure, render_figure
    from pipeline.world.objects import object_content, plan_object_scene, render_object_image
    from pipeline.world.segments import (
        BACKGROUND_BGR,
        BALL_RADIUS,
        FRAME_COUNT,
        FRAME_US,
        VIDEO_HEIGHT,
        VIDEO_WIDTH,
        ball_position,
        plan_segment_scene,
        segment_content,
    )
    from stages.object_lexicon import caption_texts, strip_markup

    colours, shapes, _ = words()
    draw = rng.random()
    if draw < 0.8:
        scene = plan_object_scene(f"t{index}", rng)
        texts = [clean(t) for t in caption_texts(object_content(scene), scene.captions)]
        return render_object_image(scene), texts, {(s.colour, s.shape) for s in scene.shapes}
    if draw < 0.95:
        fig = Figure(int(rng.integers(1, 4)), colours[int(rng.integers(len(colours)))],
                     shapes[int(rng.integers(len(shapes)))], SIZES[int(rng.integers(2))])
        return render_figure(fig), [fig.caption()], {(fig.colour, fig.shape)}
    seg = plan_segment_scene(f"s{index}", rng)
    frame = render.blank_canvas(VIDEO_WIDTH, VIDEO_HEIGHT, BACKGROUND_BGR)
    x, y = ball_position(seg.events, int(rng.integers(FRAME_COUNT)) * FRAME_US)
    render.draw_shape(frame, "circle", (round(x), round(y)), BALL_RADIUS,
                      render.COLOURS_BGR[seg.ball_colour])
    return frame, [clean(strip_markup(segment_content(seg)))], {(seg.ball_colour, "ball")}


def corpus_texts(n: int = 3000, seed: int = 12345) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [t for i in range(n) for t in example(rng, i)[1]]
    texts += ["Section 1 studies squares.", "A short report on coloured shapes.",
              "the ball moves left with a 440 Hz tone"]
    return texts


# ---- the training stream ----------------------------------------------------------------------
def _batch(rng: np.random.Generator, size: int, start: int, transform: Any, negatives: int
           ) -> tuple[np.ndarray, list[str], list[str]]:
    """Images, one true text per image, and up to ``negatives`` swapped copies of each text
    (swap kinds taken in a random order, each kind as often as ``negatives`` needs)."""
    images, texts, hard = [], [], []
    for i in range(size):
        bgr, options, labels = example(rng, start + i)
        images.append(to_model_pixels(bgr, transform))
        text = options[int(rng.integers(len(options)))]
        texts.append(text)
        found = 0
        for kind in rng.permutation(SWAP_KINDS * -(-negatives // len(SWAP_KINDS))):
            if found == negatives:
                break
            swapped = swap_caption(text, labels, str(kind), rng)
            if swapped is not None:
                hard.append(swapped)
                found += 1
    return np.stack(images), texts, hard


class Steps:
    """The training stream: step ``s`` is drawn from its own generator ``(seed, 1, s)``, so the
    batches are the same whatever the number of render workers. Yields (uint8 pixels NHWC,
    token ids of the true texts then the swapped ones, each text's id among the distinct texts).
    A torch IterableDataset: with DataLoader workers, worker k renders steps k, k+n, ..."""

    def __init__(self, seed: int, steps: int, batch: int, negatives: int, image_size: int,
                 bpe_path: Path, context_length: int) -> None:
        self.seed, self.steps, self.batch, self.negatives = seed, steps, batch, negatives
        self.image_size, self.bpe_path, self.context_length = image_size, bpe_path, context_length

    def __iter__(self) -> Any:
        import open_clip
        import torch

        from stages.decode_media import geometric_transform

        info = torch.utils.data.get_worker_info()
        first, every = (info.id, info.num_workers) if info is not None else (0, 1)
        transform = geometric_transform(self.image_size, RESIZE_MODE, INTERPOLATION, 0)
        tok = open_clip.SimpleTokenizer(bpe_path=str(self.bpe_path),
                                        context_length=self.context_length)
        for step in range(first, self.steps, every):
            rng = np.random.default_rng([self.seed, 1, step])
            pixels, texts, hard = _batch(rng, self.batch, step * self.batch, transform,
                                         self.negatives)
            all_texts = texts + hard
            ids = {t: i for i, t in enumerate(dict.fromkeys(all_texts))}
            yield (torch.from_numpy(pixels), tok(all_texts),
                   torch.tensor([ids[t] for t in all_texts]))


def stream(data: Steps, workers: int) -> Any:
    import torch

    if workers == 0:
        return iter(data)
    dataset = type("StepsDataset", (torch.utils.data.IterableDataset,), {
        "__iter__": lambda self: iter(data)})()
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                            prefetch_factor=4, pin_memory=True,
                                            multiprocessing_context="fork"))
