"""``xmodal train-demo-model``: a tiny open_clip model trained on the sample world.

The demo's CLIP scores should mean something, and no downloaded model knows our shapes, so the
project trains its own: a ViT (64 px, patch 8, 4 layers, width 128) and a text transformer (3
layers, width 64) on the rendered scenes and texts of :mod:`pipeline.demo_models.clip_data`
(also its reduced vocabulary). The loss is CLIP's contrastive loss plus a sigmoid (SigLIP) term
that calibrates an absolute threshold; each image also gets ``--negatives`` colour-, shape- or
size-swapped copies of its caption as hard negatives (NegCLIP). Identical captions in a batch
are not counted as negatives. ``--init`` continues from an earlier checkpoint (the shipped
model was trained in phases; its card lists the commands).

The output directory holds ``open_clip_config.json``, ``open_clip_model.safetensors``,
``tokenizer_bpe.txt.gz`` and ``card.json`` (seeds, config, training time, held-out R@1,
swapped-caption score gaps and the recommended threshold).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from pipeline.demo_models.clip_data import (
    IMAGE_SIZE,
    INTERPOLATION,
    RESIZE_MODE,
    Steps,
    corpus_texts,
    reduced_bpe,
    stream,
)
from pipeline.demo_models.clip_eval import write_card
from pipeline.demo_models.losses import multi_positive_nll

# Patch 8: at patch 16 a small shape is a few pixels of one patch and the model learnt colour
# but not shape (shape-swapped captions scored as high as true ones).
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 128, "layers": 4,
                   "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 24, "vocab_size": 0, "width": 64, "heads": 2, "layers": 3},
}


def load_demo_clip(model_dir: Path) -> tuple[Any, Any]:
    from access.models import load_open_clip

    bundle = load_open_clip(model_dir)
    return bundle.model, bundle.tokenizer


# ---- training ---------------------------------------------------------------------------------
def train(out_dir: Path, steps: int = 3000, batch: int = 64, seed: int = 0, threads: int = 2,
          negatives: int = 3, init: Path | None = None, log_every: int = 100,
          device: str = "cpu", workers: int = 0, image_size: int = IMAGE_SIZE,
          vision_width: int = 128, vision_layers: int = 4, lr: float = 1e-3) -> dict[str, Any]:
    """Train the demo model (from scratch, or on from the checkpoint ``init`` with its
    tokenizer and architecture), write the checkpoint under ``out_dir`` and return its card.
    ``workers`` render the batches in DataLoader processes (0: in this process); on ``cuda``
    the forward runs under bf16 autocast."""
    import copy

    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from access.models import normalise_pixels
    from stages.scoring import pick_device

    try:
        device = pick_device(device)
    except ValueError as err:
        raise SystemExit(f"--device {err}") from None
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe_path = out_dir / "tokenizer_bpe.txt.gz"
    if init is None:
        bpe_path.write_bytes(reduced_bpe(corpus_texts()))
        cfg = copy.deepcopy(MODEL_CFG)
        cfg["vision_cfg"].update(image_size=image_size, width=vision_width, layers=vision_layers)
    else:
        bpe_path.write_bytes((init / bpe_path.name).read_bytes())
        cfg = json.loads((init / "open_clip_config.json").read_text())["model_cfg"]
    image_size = cfg["vision_cfg"]["image_size"]
    context = cfg["text_cfg"]["context_length"]
    cfg["text_cfg"]["vocab_size"] = open_clip.SimpleTokenizer(bpe_path=str(bpe_path)).vocab_size
    batches = stream(Steps(seed, steps, batch, negatives, image_size, bpe_path, context), workers)
    model = open_clip.CLIP(**cfg)
    if init is not None:
        from safetensors.torch import load_file

        weights = load_file(str(init / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    model.to(device)
    sigmoid = torch.nn.Parameter(torch.tensor([math.log(10.0), -10.0], device=device))  # log scale, bias
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2] + [sigmoid]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    warmup, t0 = max(1, steps // 20), time.perf_counter()
    for step, (pixels, tokens, key) in enumerate(batches):
        rate = lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = rate
        x = normalise_pixels(pixels.to(device, non_blocking=True), open_clip.OPENAI_DATASET_MEAN,
                             open_clip.OPENAI_DATASET_STD)
        key = key.to(device, non_blocking=True)
        positive = key[:batch, None] == key[None, :]
        with autocast:
            image_features = model.encode_image(x)
            text_features = model.encode_text(tokens.to(device, non_blocking=True))
        cos = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
        logits = model.logit_scale.exp() * cos
        contrastive = (multi_positive_nll(logits, positive)
                       + multi_positive_nll(logits[:, :batch].T, positive[:, :batch].T)) / 2
        calibration = F.binary_cross_entropy_with_logits(
            sigmoid[0].exp() * cos + sigmoid[1], positive.float(), reduction="sum") / batch
        loss = contrastive + calibration
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item():.3f}  ({contrastive.item():.3f} + "
                  f"{calibration.item():.3f})  lr {rate:.2e}  {time.perf_counter() - t0:.0f}s",
                  flush=True)
    train_s = time.perf_counter() - t0
    model.to("cpu").eval()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    (out_dir / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"size": image_size, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD), "resize_mode": RESIZE_MODE,
                           "interpolation": INTERPOLATION, "fill_color": 0},
        "xmodal_tokenizer": {"bpe": bpe_path.name},
    }, indent=2) + "\n")
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {threads} threads"
    return write_card(out_dir, seed=seed, steps=steps, batch=batch, threads=threads,
                      negatives=negatives, train_s=train_s, init=init, device=device,
                      hardware=hardware, workers=workers, lr=lr)


def cmd_train_demo_model(args: argparse.Namespace) -> int:
    # On a shared machine OpenMP threads spinning at barriers lose their cores (several times
    # slower); passive waiting must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    init = Path(args.init) if args.init else None
    card = train(Path(args.out), steps=args.steps, batch=args.batch, seed=args.seed,
                 threads=args.threads, negatives=args.negatives, init=init, device=args.device,
                 workers=args.workers, image_size=args.image_size, vision_width=args.vision_width,
                 vision_layers=args.vision_layers, lr=args.lr)
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
    p.add_argument("--init", help="continue from this checkpoint directory (same tokenizer and "
                   "architecture)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the model trains (default cpu; cuda uses bf16 autocast)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes rendering batches (default 0: in the training process)")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                   help=f"model input size, patch 8 (default {IMAGE_SIZE})")
    p.add_argument("--vision-width", type=int, default=128, help="ViT width (default 128)")
    p.add_argument("--vision-layers", type=int, default=4, help="ViT layers (default 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
