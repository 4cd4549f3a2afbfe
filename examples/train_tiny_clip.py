"""Train the demo's tiny CLIP on a release of the sample world, with and without cross-modal
mixup + a consistency loss, and report R@1 on held-out image-text pairs.

The model, its reduced BPE vocabulary and the image preprocessing are the demo trainer's
(``pipeline.demo_models.clip_train``, ``clip_data``); the data come from a release through ``ReleaseDataset`` (object
records, placeholder spans and images checked, split into train and held-out by a hash of the id).

- ``baseline``: symmetric InfoNCE; identical captions in a batch count as positives.
- ``mixup``: images mixed at input level (``MixupCollate``, lambda ~ Beta(alpha, alpha)), the
  same lambda mixes the text embeddings at feature level; InfoNCE on the soft targets
  ``mixup_targets(lam, perm)``, plus ``weight * (1 - cos)`` between the mixed image embedding
  and the mixed text embedding.

R@1 image->text ranks the distinct held-out captions ("Two shapes: a small red circle and ...")
for each held-out image; text->image ranks the held-out images for each caption. A hit is the
same caption text, as in the demo model's card. Run::

    python examples/train_tiny_clip.py --release out/releases/sample-world/demo
    python examples/train_tiny_clip.py --world 1500 --epochs 30     # builds its own release
    python examples/train_tiny_clip.py --tiny                       # seconds: the test's run
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

from pipeline.demo_models.clip_data import IMAGE_SIZE, INTERPOLATION, RESIZE_MODE, reduced_bpe
from pipeline.demo_models.clip_eval import to_model_pixels
from pipeline.demo_models.clip_train import MODEL_CFG
from pipeline.training.loader import ReleaseDataset, Sample
from pipeline.training.losses import EmbeddingConsistencyLoss, InfoNCELoss, add_weighted
from pipeline.training.mixup import MixedBatch, MixupCollate, mix_features, mixup_targets
from stages.object_lexicon import caption_texts

VARIANTS = ("baseline", "mixup")


def clean(text: str) -> str:
    return " ".join(text.split())


def is_heldout(sample_id: str, share: float) -> bool:
    """A stable split: the same ids are held out whatever the shard order or the seed."""
    return int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 2**32 < share


@dataclass(frozen=True)
class SplitFilter:
    """``where`` of the dataset: object rows with images, on one side of the split (picklable)."""

    share: float
    heldout: bool

    def __call__(self, sample: Sample) -> bool:
        has_image = any(m.modality == "image" for m in sample.media)
        return has_image and is_heldout(sample.id, self.share) == self.heldout


class ToPair:
    """Sample -> {"image": normalised float tensor, "text": one caption}: a random caption of the
    row when training (torch's RNG, seeded per DataLoader worker), the first caption otherwise."""

    def __init__(self, train: bool) -> None:
        import open_clip

        from stages.decode_media import geometric_transform

        self.train = train
        self.geometry = geometric_transform(IMAGE_SIZE, RESIZE_MODE, INTERPOLATION, 0)
        self.mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)

    def __call__(self, sample: Sample) -> dict[str, Any]:
        pixels = to_model_pixels(sample.images[0][:, :, ::-1], self.geometry)  # it takes BGR
        image = (torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0 - self.mean) / self.std
        texts = [clean(t) for t in caption_texts(sample.content, sample.captions)]
        if self.train:
            text = texts[int(torch.randint(len(texts), (1,)))]
        else:
            text = clean(sample.captions[0]) if sample.captions else texts[0]
        return {"image": image, "text": text}


def build_model(texts: Sequence[str], workdir: Path, tiny: bool) -> tuple[Any, Any]:
    """The demo's CLIP config and reduced tokenizer (one or two layers a tower with ``tiny``)."""
    import open_clip

    bpe = workdir / "tokenizer_bpe.txt.gz"
    bpe.write_bytes(reduced_bpe(list(texts)))
    cfg = copy.deepcopy(MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(bpe_path=str(bpe), context_length=cfg["text_cfg"]["context_length"])
    cfg["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    if tiny:
        cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 1
    return open_clip.CLIP(**cfg), tokenizer


def positives(texts: Sequence[str]) -> torch.Tensor:
    """Row-normalised (B, B) targets: every copy of the same caption is a positive."""
    keys = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([keys[t] for t in texts])
    same = (ids[:, None] == ids[None, :]).float()
    return same / same.sum(1, keepdim=True)


def train_variant(variant: str, args: argparse.Namespace, data: ReleaseDataset, rows: int, texts: Sequence[str],
                  workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Train one variant from the same initial weights; returns the model, its tokenizer and facts."""
    torch.manual_seed(args.seed)  # both variants start from the same weights
    model, tokenizer = build_model(texts, workdir, args.tiny)
    model.to(args.device).train()
    mixing = variant == "mixup"
    collate = MixupCollate(["image"], alpha=args.alpha, seed=args.seed) if mixing else default_collate
    loader = DataLoader(data, batch_size=args.batch, collate_fn=collate, num_workers=args.workers, drop_last=True)
    clip_loss = InfoNCELoss(weight=1.0, normalize=False)
    consistency = EmbeddingConsistencyLoss(weight=args.consistency_weight, metric="cosine")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    total = max(1, args.epochs * (rows // args.batch))
    step, t0, last = 0, time.perf_counter(), float("nan")
    for epoch in range(args.epochs):
        data.set_epoch(epoch)
        for item in loader:
            batch, lam, perm = (item.batch, item.lam, item.perm) if isinstance(item, MixedBatch) else (item, None, None)
            warmup = (step + 1) / max(1, total // 20)
            lr = args.lr * min(warmup, 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
            for group in opt.param_groups:
                group["lr"] = lr
            img = F.normalize(model.encode_image(batch["image"].to(args.device)), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer(batch["text"]).to(args.device)), dim=-1)
            targets = positives(batch["text"]).to(args.device)
            scale = model.logit_scale.exp()
            if lam is None or perm is None:
                loss = clip_loss(img, txt, scale, targets)
            else:
                lam, perm = lam.to(args.device), perm.to(args.device)
                soft = mixup_targets(lam, perm) @ targets  # the pair's weights over every positive
                mixed_txt = F.normalize(mix_features({"text": txt}, lam, perm)["text"], dim=-1)
                loss = add_weighted(clip_loss(img, txt, scale, soft), consistency(img, mixed_txt))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step, last = step + 1, loss.item()
        if args.log_every and (epoch % args.log_every == 0 or epoch == args.epochs - 1):
            print(f"  {variant:8s} epoch {epoch:3d}  step {step:5d}  loss {last:.3f}  {time.perf_counter() - t0:.0f}s",
                  flush=True)
    return model, tokenizer, {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1)}


@torch.inference_mode()
def recall_at_1(model: Any, tokenizer: Any, images: torch.Tensor, texts: list[str], device: str) -> dict[str, float]:
    """R@1 both ways on held-out pairs; a hit is the same caption text (captions repeat)."""
    model.eval()
    distinct = list(dict.fromkeys(texts))
    img = F.normalize(model.encode_image(images.to(device)), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(distinct).to(device)), dim=-1)
    sims = (img @ txt.T).cpu()
    col = {t: j for j, t in enumerate(distinct)}
    i2t = np.mean([distinct[int(sims[i].argmax())] == t for i, t in enumerate(texts)])
    t2i = np.mean([texts[int(sims[:, col[t]].argmax())] == t for t in texts])
    return {"r1_image_to_text": float(i2t), "r1_text_to_image": float(t2i)}


def build_release(n: int, workdir: Path, seed: int) -> str:
    """A release of a freshly generated sample world, made in-process (no Ray)."""
    from pipeline.build import run_config
    from pipeline.run.config import parse_config
    from pipeline.world import generate_world

    world = generate_world(workdir / "world", n=n, fault_rate=0.05, seed=seed)
    cfg = parse_config({"dataset": "sample-world", "version": "train", "inputs": [str(world.manifest_path)],
                        "stages": ["placeholder_lint", "media_check"],
                        "release": {"output": str(workdir / "releases"), "overwrite": True}})
    return run_config(cfg, local=True).uri


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                epilog="example: python examples/train_tiny_clip.py --world 1500 --epochs 30")
    p.add_argument("--release", help="release URI (path or s3://); default: build one from --world records")
    p.add_argument("--world", type=int, default=600, help="sample-world records when no --release (default 600)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=0.4, help="mixup Beta(alpha, alpha) (default 0.4)")
    p.add_argument("--consistency-weight", type=float, default=0.5, help="weight of the cosine consistency term")
    p.add_argument("--heldout", type=float, help="share of object rows held out (default 0.2, 0.3 with --tiny)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=5, help="print every N epochs (0: never)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run: 60-record world, 1-layer towers, 2 epochs")
    args = p.parse_args(argv)
    if args.tiny:
        args.world, args.epochs, args.batch = 60, 2, 8
    if args.heldout is None:
        args.heldout = 0.3 if args.tiny else 0.2
    return args


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'variant':10s} {'steps':>6s} {'train s':>8s} {'R@1 i->t':>9s} {'R@1 t->i':>9s}")
    for name, f in results["variants"].items():
        print(f"{name:10s} {f['steps']:6d} {f['train_seconds']:8.1f} {f['r1_image_to_text']:9.3f} "
              f"{f['r1_text_to_image']:9.3f}")
    chance = results["chance"]
    print(f"{'chance':10s} {'':6s} {'':8s} {chance['r1_image_to_text']:9.3f} {chance['r1_text_to_image']:9.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tiny-clip-") as tmp:
        workdir = Path(tmp)
        uri = args.release or build_release(args.world, workdir, args.seed)
        common: dict[str, Any] = {"kinds": ["object"], "decode_images": True, "verify_sha256": True, "on_error": "skip"}
        train = ReleaseDataset(uri, where=SplitFilter(args.heldout, False), transform=ToPair(True), shuffle=True,
                               seed=args.seed, **common)
        held = list(ReleaseDataset(uri, where=SplitFilter(args.heldout, True), transform=ToPair(False), **common))
        if not held:
            raise SystemExit(f"{uri}: no held-out object rows (raise --heldout or use a bigger release)")
        images, texts = torch.stack([p["image"] for p in held]), [p["text"] for p in held]
        objects = list(ReleaseDataset(uri, kinds=["object"]))  # no pixels: texts and the split's size
        all_texts = [clean(t) for s in objects for t in caption_texts(s.content, s.captions)]
        rows = sum(1 for s in objects if SplitFilter(args.heldout, False)(s))
        distinct = len(set(texts))
        print(f"release {uri}: {rows} training pairs, {len(held)} held-out pairs ({distinct} distinct captions); "
              f"device {args.device}", flush=True)
        chance = {"r1_image_to_text": 1 / distinct,
                  "r1_text_to_image": float(np.mean([texts.count(t) for t in texts])) / len(texts)}
        results: dict[str, Any] = {"release": uri, "train_pairs": rows, "heldout_pairs": len(held),
                                   "distinct_captions": distinct, "chance": chance, "variants": {}}
        for variant in args.variants:
            model, tokenizer, facts = train_variant(variant, args, train, rows, all_texts, workdir)
            facts.update(recall_at_1(model, tokenizer, images, texts, args.device))
            results["variants"][variant] = facts
        results["skipped"] = train.skipped
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
