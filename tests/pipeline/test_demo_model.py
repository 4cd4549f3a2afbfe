"""The demo model's helpers: swapped captions are false for their image, the reduced BPE
tokenizes sample-world text exactly as open_clip's full vocabulary does, and the command is
registered."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import open_clip
import pytest

from pipeline.cli import build_parser
from pipeline.demo_models.clip_data import merges_used, reduced_bpe
from pipeline.demo_models.clip_eval import SWAP_KINDS, swap_caption, words

LABELS = {("red", "circle"), ("blue", "square")}
CAPTION = "Two shapes: a large red circle and a small blue square."


@pytest.mark.parametrize("seed", range(5))
def test_swaps_change_one_word_into_a_false_description(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for kind in SWAP_KINDS:
        swapped = swap_caption(CAPTION, LABELS, kind, rng)
        assert swapped is not None and swapped != CAPTION
        changed = [(a, b) for a, b in zip(CAPTION.split(), swapped.split(), strict=True) if a != b]
        assert len(changed) == 1
        if kind == "size":
            assert {changed[0][0], changed[0][1]} == {"large", "small"}
        else:
            named = {(m.group(1), m.group(2)) for m in words()[2].finditer(swapped)}
            assert len(named) == 2 and len(named - LABELS) == 1


def test_swaps_are_none_without_the_word() -> None:
    rng = np.random.default_rng(0)
    assert swap_caption("The L marker is on the left side of the film.", LABELS, "colour", rng) is None
    assert swap_caption("The red circle is left of the blue square.", LABELS, "size", rng) is None


def test_reduced_bpe_tokenizes_the_world_like_the_full_vocabulary(tmp_path: Path) -> None:
    texts = [CAPTION, "The purple triangle is above the orange circle.",
             "Figure 2 shows a small yellow triangle.", "A green ball moves three times."]
    path = tmp_path / "bpe.txt.gz"
    path.write_bytes(reduced_bpe(texts, first=256))
    small, full = open_clip.SimpleTokenizer(bpe_path=str(path)), open_clip.SimpleTokenizer()
    lines = gzip.open(path).read().decode().split("\n")
    assert len(lines) - 1 == 256 + len({" ".join(m) for m in merges_used(texts)} - set(lines[1:257]))
    assert small.vocab_size == 512 + len(lines) - 1 + 2 < 2000
    for text in texts:
        words = [full.decoder[i] for i in full.encode(text)]
        assert [small.decoder[i] for i in small.encode(text)] == words


def test_train_demo_model_is_a_command() -> None:
    args = build_parser().parse_args(["train-demo-model", "--out", "x", "--steps", "5"])
    assert args.steps == 5 and args.negatives == 3 and args.init is None
