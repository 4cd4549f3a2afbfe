"""``xmodal train-demo-model``: a tiny open_clip model trained on the sample world.

The demo's CLIP scores should mean something, and no downloaded model knows our shapes, so the
project trains its own: a ViT (64 px, patch 8, 4 layers, width 128) and a text transformer
(3 layers, width 64) on images rendered exactly as ``decode_media`` prepares them (open_clip's eval transform,
``squash`` to 64 px) and the texts that ``clip_score`` scores (object content and captions,
document figure captions, segment sentences). Scenes are drawn fresh every step, so nothing is
seen twice. The loss is CLIP's contrastive loss plus a sigmoid (SigLIP) term that calibrates an
absolute threshold; each image also gets a colour-, shape- or size-swapped copy of its caption as
a hard negative (NegCLIP). Identical captions in a batch are not counted as negatives.

The vocabulary is open_clip's BPE cut to its first ``FIRST_MERGES`` merges plus every merge the
sample world's words need (the words tokenize exactly as with the full vocabulary), which keeps
the fp16 checkpoint a few MB. The output directory holds ``open_clip_config.json``,
``open_clip_model.safetensors``, ``tokenizer_bpe.txt.gz`` and ``card.json`` (seed, config,
training time, held-out R@1, swapped-caption score gaps and the recommended threshold).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo_eval import SWAP_KINDS, swap_caption, words, write_card

IMAGE_SIZE, RESIZE_MODE, INTERPOLATION = 64, "squash", "bicubic"
FIRST_MERGES = 2048
# Patch 8: at patch 16 a small shape is a few pixels of one patch and the model learnt colour
# but not shape (shape-swapped captions scored as high as true ones).
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 128, "layers": 4,
                   "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 24, "vocab_size": 0, "width": 64, "heads": 2, "layers": 3},
}
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
def clean(text: str) -> str:
    return " ".join(text.split())


def example(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[str], set[tuple[str, str]]]:
    """One rendered BGR image, its true texts and its (colour, shape) labels: an object scene
    (80%), a document figure (15%) or a segment frame (5%)."""
    from pipeline.sample_world import render
    from pipeline.sample_world.documents import Figure, render_figure
    from pipeline.sample_world.objects import object_content, plan_object_scene, render_object_image
    from pipeline.sample_world.segments import (
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


def to_model_pixels(bgr: np.ndarray, transform: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))))


def corpus_texts(n: int = 3000, seed: int = 12345) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = [t for i in range(n) for t in example(rng, i)[1]]
    texts += ["Section 1 studies squares.", "A short report on coloured shapes.",
              "the ball moves left with a 440 Hz tone"]
    return texts


def load_demo_clip(model_dir: Path) -> tuple[Any, Any]:
    from pipeline.models import load_open_clip

    bundle = load_open_clip(model_dir)
    return bundle.model, bundle.tokenizer


# ---- training ---------------------------------------------------------------------------------
def _batch(rng: np.random.Generator, size: int, start: int, transform: Any, negatives: int
           ) -> tuple[np.ndarray, list[str], list[str]]:
    """Images, one true text per image, and up to ``negatives`` swapped copies of each text
    (one per swap kind)."""
    images, texts, hard = [], [], []
    for i in range(size):
        bgr, options, labels = example(rng, start + i)
        images.append(to_model_pixels(bgr, transform))
        text = options[int(rng.integers(len(options)))]
        texts.append(text)
        found = 0
        for kind in rng.permutation(SWAP_KINDS):
            if found == negatives:
                break
            swapped = swap_caption(text, labels, str(kind), rng)
            if swapped is not None:
                hard.append(swapped)
                found += 1
    return np.stack(images), texts, hard


def _multi_positive_nll(logits: Any, positive: Any) -> Any:
    import torch

    masked = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)).mean()


def train(out_dir: Path, steps: int = 3000, batch: int = 64, seed: int = 0, threads: int = 2,
          negatives: int = 3, init: Path | None = None, log_every: int = 100) -> dict[str, Any]:
    """Train the demo model (from scratch, or on from the checkpoint ``init`` with its
    tokenizer), write the checkpoint under ``out_dir`` and return its card."""
    import copy

    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from stages.decode_media import geometric_transform

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe_path = out_dir / "tokenizer_bpe.txt.gz"
    if init is None:
        bpe_path.write_bytes(reduced_bpe(corpus_texts()))
        cfg = copy.deepcopy(MODEL_CFG)
    else:
        bpe_path.write_bytes((init / bpe_path.name).read_bytes())
        cfg = json.loads((init / "open_clip_config.json").read_text())["model_cfg"]
    tok = open_clip.SimpleTokenizer(bpe_path=str(bpe_path),
                                    context_length=cfg["text_cfg"]["context_length"])
    cfg["text_cfg"]["vocab_size"] = tok.vocab_size
    model = open_clip.CLIP(**cfg)
    if init is not None:
        from safetensors.torch import load_file

        weights = load_file(str(init / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    transform = geometric_transform(IMAGE_SIZE, RESIZE_MODE, INTERPOLATION, 0)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    sigmoid = torch.nn.Parameter(torch.tensor([math.log(10.0), -10.0]))  # log scale, bias
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2] + [sigmoid]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.98))
    rng = np.random.default_rng([seed, 1])
    warmup, t0 = max(1, steps // 20), time.perf_counter()
    for step in range(steps):
        lr = 1e-3 * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        pixels, texts, hard = _batch(rng, batch, step * batch, transform, negatives)
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        all_texts = texts + hard
        ids = {t: i for i, t in enumerate(dict.fromkeys(all_texts))}
        key = torch.tensor([ids[t] for t in all_texts])
        positive = key[:batch, None] == key[None, :]
        cos = F.normalize(model.encode_image(x), dim=-1) @ F.normalize(
            model.encode_text(tok(all_texts)), dim=-1).T
        logits = model.logit_scale.exp() * cos
        contrastive = (_multi_positive_nll(logits, positive)
                       + _multi_positive_nll(logits[:, :batch].T, positive[:, :batch].T)) / 2
        calibration = F.binary_cross_entropy_with_logits(
            sigmoid[0].exp() * cos + sigmoid[1], positive.float(), reduction="sum") / batch
        loss = contrastive + calibration
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item():.3f}  ({contrastive.item():.3f} + "
                  f"{calibration.item():.3f})  lr {lr:.2e}  {time.perf_counter() - t0:.0f}s",
                  flush=True)
    train_s = time.perf_counter() - t0
    model.eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    (out_dir / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"size": IMAGE_SIZE, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD), "resize_mode": RESIZE_MODE,
                           "interpolation": INTERPOLATION, "fill_color": 0},
        "xmodal_tokenizer": {"bpe": bpe_path.name},
    }, indent=2) + "\n")
    return write_card(out_dir, seed=seed, steps=steps, batch=batch, threads=threads,
                      negatives=negatives, train_s=train_s, init=init)


def cmd_train_demo_model(args: argparse.Namespace) -> int:
    # On a shared machine OpenMP threads spinning at barriers lose their cores (several times
    # slower); passive waiting must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    init = Path(args.init) if args.init else None
    card = train(Path(args.out), steps=args.steps, batch=args.batch, seed=args.seed,
                 threads=args.threads, negatives=args.negatives, init=init)
    print(json.dumps({k: v for k, v in card.items() if k != "model_cfg"}, indent=2))
    return 0


def register_cli(add: Any) -> None:
    p = add("train-demo-model", "train the tiny CLIP of the demo on the sample world (CPU, "
            "minutes) and write its checkpoint, tokenizer and card", cmd_train_demo_model,
            "xmodal train-demo-model --out models/demo-clip --steps 3000 --seed 0")
    p.add_argument("--out", required=True, help="output directory (models/demo-clip)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--negatives", type=int, default=3,
                   help="swapped-caption hard negatives per image (default 3)")
    p.add_argument("--init", help="continue from this checkpoint directory (same tokenizer)")
