"""Evaluation of the demo CLIP, and the swapped captions it is trained and judged against.

:func:`swap_caption` changes one colour, shape or size word of a true caption so that it no
longer describes its image (the training's hard negatives, and the mismatches injected by the
tests and the benchmark). :func:`evaluate` scores held-out object scenes, rendered and resized
exactly as ``decode_media`` prepares them, through the loader ``clip_score`` uses;
:func:`write_card` picks the threshold on one held-out set and reports on another.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from stages.counterfactuals import counterfactuals

_SIZE_RE = re.compile(r"\b(large|small)\b")
SWAP_KINDS = ("colour", "shape", "size")
# The clip_score settings the card recommends besides its threshold: each caption also against
# its size-flipped copies (a three-object caption with one wrong size keeps two thirds of its
# meaning and an absolute score; the model still ranks the true one higher). Size only: the
# model never saw the lexicon's other colours and objects, whose copies score at random.
COUNTERFACTUALS, COUNTERFACTUAL_MARGIN = ("size",), 0.04
# Half a percent of clean validation pairs under the threshold: with the counterfactual check,
# about 1.2% of clean test pairs are lost in all (the issue allows 2%).
THRESHOLD_QUANTILE = 0.005


@functools.cache
def clean(text: str) -> str:
    """Whitespace folded, as the tokenizer sees training and evaluation texts alike."""
    return " ".join(text.split())


def to_model_pixels(bgr: np.ndarray, transform: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))))


def words() -> tuple[tuple[str, ...], tuple[str, ...], re.Pattern[str]]:
    """Colours, shapes and a "<colour> <shape>" pattern (imported late: `xmodal --help` stays
    fast)."""
    from pipeline.world import render

    colours, shapes = tuple(render.COLOURS_BGR), tuple(render.SHAPES)
    return colours, shapes, re.compile(rf"\b({'|'.join(colours)})\s+({'|'.join(shapes)}|ball)\b")


# ---- swapped captions (training negatives, and the benchmark's injected mismatches) ----------
def swap_caption(text: str, labels: set[tuple[str, str]], kind: str,
                 rng: np.random.Generator) -> str | None:
    """``text`` with one colour, shape or size word changed so that it no longer describes the
    image whose (colour, shape) labels are ``labels``; None when ``text`` has no such word."""
    if kind == "size":
        found = list(_SIZE_RE.finditer(text))
        if not found:
            return None
        m = found[int(rng.integers(len(found)))]
        other = "small" if m.group(1) == "large" else "large"
        return text[:m.start()] + other + text[m.end():]
    colours, shapes, pair_re = words()
    found = list(pair_re.finditer(text))
    rng.shuffle(found)
    for m in found:
        colour, shape = m.group(1), m.group(2)
        if kind == "colour":
            options = [c for c in colours if c != colour and (c, shape) not in labels]
            start, end = m.span(1)
        else:
            options = [s for s in shapes if s != shape and (colour, s) not in labels]
            start, end = m.span(2)
        if options:
            new = options[int(rng.integers(len(options)))]
            return text[:start] + new + text[end:]
    return None


# ---- evaluation -------------------------------------------------------------------------------
def score_pairs(bundle: Any, images: np.ndarray, texts: list[str]) -> np.ndarray:
    """Cosine of each (image, text) pair, with the model the stage's loader gave."""
    import torch

    x = bundle.model_input(torch.from_numpy(images))
    with torch.inference_mode():
        img = torch.nn.functional.normalize(bundle.model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(bundle.model.encode_text(bundle.tokenizer(texts)), dim=-1)
    return (img @ txt.T).numpy()


def evaluate(model_dir: Path, seed: int, n: int = 240) -> dict[str, Any]:
    """Held-out object scenes: R@1 both ways on the count captions (a hit is the same text),
    and the scores of every true text and of its colour-, shape- and size-swapped copies."""
    from access.models import load_open_clip
    from pipeline.world.objects import object_content, plan_object_scene, render_object_image
    from stages.decode_media import geometric_transform
    from stages.object_lexicon import caption_texts

    b = load_open_clip(model_dir)
    transform = geometric_transform(b.image_size, b.resize_mode, b.interpolation, b.fill_color)
    rng = np.random.default_rng([seed, 2])
    images, counts, pairs = [], [], []  # pairs: (image index, text, swap kind or "clean")
    alternatives: dict[tuple[int, str], list[str]] = {}
    for i in range(n):
        scene = plan_object_scene(f"e{i}", rng)
        images.append(to_model_pixels(render_object_image(scene), transform))
        counts.append(scene.captions[0])
        labels = {(s.colour, s.shape) for s in scene.shapes}
        true = [clean(t) for t in caption_texts(object_content(scene), scene.captions)]
        for text in true:
            pairs.append((i, text, "clean"))
            swaps = [(s, k) for k in SWAP_KINDS if (s := swap_caption(text, labels, k, rng))]
            pairs += [(i, s, k) for s, k in swaps]
            # as clip_score sees the row: its other captions, the swapped one replaced
            for t in (text, *(s for s, _ in swaps)):
                row = [c for c in true if c != text]
                alternatives[(i, t)] = [c.text for c in counterfactuals(t, COUNTERFACTUALS, row)]
    texts = list(dict.fromkeys(counts + [t for _, t, _ in pairs]
                               + [a for alts in alternatives.values() for a in alts]))
    sims = score_pairs(b, np.stack(images), texts)
    col = {t: j for j, t in enumerate(texts)}
    count_cols = np.array([col[t] for t in counts])
    i2t = np.mean([counts[int(np.argmax(sims[i, count_cols]))] == counts[i] for i in range(n)])
    t2i = np.mean([counts[int(np.argmax(sims[:, col[counts[i]]]))] == counts[i] for i in range(n)])
    scores: dict[str, list[float]] = {k: [] for k in ("clean", *SWAP_KINDS)}
    gaps: dict[str, list[float]] = {k: [] for k in ("clean", *SWAP_KINDS)}
    for i, text, kind in pairs:
        scores[kind].append(float(sims[i, col[text]]))
        alts = [sims[i, col[a]] for a in alternatives[(i, text)]]
        gaps[kind].append(float(max(alts) - sims[i, col[text]]) if alts else -np.inf)
    return {"r1_image_to_text": float(i2t), "r1_text_to_image": float(t2i), "images": n,
            "scores": {k: np.asarray(v) for k, v in scores.items()},
            "counterfactual_gaps": {k: np.asarray(v) for k, v in gaps.items()}}


def _init_facts(init: Path | None) -> dict[str, Any] | None:
    """What a continued training started from: the earlier card's training facts."""
    if init is None:
        return None
    from access.models import file_sha256

    earlier = json.loads((init / "card.json").read_text())
    keep = ("seed", "steps", "batch", "negatives_per_image", "train_seconds", "hardware", "init")
    return {"weights_sha256": file_sha256(init / "open_clip_model.safetensors"),
            **{k: earlier.get(k) for k in keep}}


def _reproduce(facts: dict[str, Any]) -> list[str]:
    commands = []
    init = facts.get("init")
    if init is not None:
        earlier = json.loads((init / "card.json").read_text())["reproduce"]
        commands = [c.replace("models/demo-clip", f"{init.name}") for c in earlier[:-1]]
        commands.append(earlier[-1].replace("--out models/demo-clip", f"--out {init.name}"))
    command = (f"xmodal train-demo-model --out models/demo-clip --steps {facts['steps']} "
               f"--batch {facts['batch']} --seed {facts['seed']} --negatives {facts['negatives']} "
               f"--lr {facts['lr']:g} --device {facts['device']} --workers {facts['workers']}")
    if init is None:
        vision = json.loads((facts["out_dir"] / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]
        command += (f" --image-size {vision['image_size']} --vision-width {vision['width']} "
                    f"--vision-layers {vision['layers']}")
    commands.append(command + (f" --init {init.name}" if init is not None else ""))
    return commands


def measure(out_dir: Path) -> dict[str, Any]:
    """The card's measured fields: the threshold picked on a validation set
    (``THRESHOLD_QUANTILE`` of clean pairs under it), then R@1 and clean / swapped scores on a
    test set, with the threshold alone and with the recommended counterfactual check as well."""
    from access.models import file_sha256

    val, test = evaluate(out_dir, seed=1001, n=600), evaluate(out_dir, seed=2002, n=600)
    threshold = float(np.quantile(val["scores"]["clean"], THRESHOLD_QUANTILE))
    clean = test["scores"]["clean"]

    def rejected(kind: str) -> float:
        beaten = test["counterfactual_gaps"][kind] > COUNTERFACTUAL_MARGIN
        return round(float(np.mean((test["scores"][kind] < threshold) | beaten)), 4)

    return {
        "weights_sha256": file_sha256(out_dir / "open_clip_model.safetensors"),
        "weights_bytes": (out_dir / "open_clip_model.safetensors").stat().st_size,
        "test_r1_image_to_text": round(test["r1_image_to_text"], 4),
        "test_r1_text_to_image": round(test["r1_text_to_image"], 4),
        "test_images": test["images"],
        "recommended_min_caption_score": round(threshold, 4),
        "recommended_clip_score_params": {
            "min_caption_score": round(threshold, 4), "counterfactuals": list(COUNTERFACTUALS),
            "counterfactual_margin": COUNTERFACTUAL_MARGIN},
        "test_clean_pairs": int(clean.size),
        "test_clean_pairs_below_threshold": round(float(np.mean(clean < threshold)), 4),
        "test_clean_pairs_rejected_with_counterfactuals": rejected("clean"),
        "test_mean_clean_score": round(float(clean.mean()), 4),
        "swapped": {k: {"pairs": int(test["scores"][k].size),
                        "mean_score": round(float(test["scores"][k].mean()), 4),
                        "mean_gap_to_clean": round(float(clean.mean() - test["scores"][k].mean()), 4),
                        "rejected_at_threshold": round(float(np.mean(test["scores"][k] < threshold)), 4),
                        "rejected_with_counterfactuals": rejected(k)}
                    for k in SWAP_KINDS},
    }


def write_card(out_dir: Path, **facts: Any) -> dict[str, Any]:
    """The card: training facts, then what :func:`measure` finds."""
    measured = measure(out_dir)
    card = {
        "model": "xmodal demo CLIP (open_clip, trained on the sample world)",
        "seed": facts["seed"], "steps": facts["steps"], "batch": facts["batch"],
        "negatives_per_image": facts["negatives"], "threads": facts["threads"],
        "train_seconds": round(facts["train_s"], 1), "hardware": facts["hardware"],
        "lr": facts["lr"], "render_workers": facts["workers"],
        "init": _init_facts(facts.get("init")),
        "model_cfg": json.loads((out_dir / "open_clip_config.json").read_text())["model_cfg"],
        **measured,
        "reproduce": _reproduce({**facts, "out_dir": out_dir}),
        "tokenizer": "open_clip SimpleTokenizer(bpe_path=tokenizer_bpe.txt.gz); plain "
                     "open_clip.get_tokenizer would give ids beyond the vocabulary",
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
