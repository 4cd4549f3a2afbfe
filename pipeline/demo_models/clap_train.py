"""``xmodal train-demo-clap``: a tiny transformers ``ClapModel`` trained on the sample world.

The demo's ``clap_score`` should mean something, and no downloaded CLAP knows our tone bursts,
so the project trains its own: an HTSAT audio tower (a 64 x 64 log-mel image, patch 4, two Swin
stages, the second one a single global window so that the order of bursts is visible) and a
two-layer RoBERTa text tower, projected to 64 dimensions. Its audio input is what
``decode_media`` + ``clap_score`` give it (16 kHz mono, the first 8 s, ``ClapFeatureExtractor``
with 64 Slaney mel bands from 50 Hz to 4 kHz, 2048-sample frames). Clips are drawn fresh every
step from the world's own scene planner and audio renderer (:mod:`pipeline.demo_models.clap_data`),
so nothing is seen twice; texts are the subtitles joined (80%) or the content sentence.

The loss is a multi-positive contrastive loss both ways (a text is a positive of every clip it
describes: the same pitches in order, or for the sentence the same count) plus a sigmoid term
that calibrates an absolute threshold. Each clip also gets ``--text-negatives`` edited texts and
``--audio-negatives`` share of edited audio (one pitch replaced, two swapped, one burst dropped)
as hard negatives. The output directory holds ``model.safetensors`` (fp16), ``config.json``, the
processor files and ``card.json`` (:mod:`pipeline.demo_models.clap_eval`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo_models import clap_data
from pipeline.demo_models.losses import multi_positive_nll

TEXT_MAX_LENGTH = 64
FEATURES: dict[str, Any] = {
    "feature_size": 64, "sampling_rate": clap_data.SAMPLE_RATE, "hop_length": 2048,
    "max_length_s": 8, "fft_window_size": 2048, "frequency_min": 200, "frequency_max": 1200,
    "truncation": "rand_trunc", "padding": "pad",
}
AUDIO_CFG: dict[str, Any] = {
    "spec_size": 64, "num_mel_bins": 64, "window_size": 8, "patch_size": 4,
    "patch_stride": [4, 4], "patch_embeds_hidden_size": 32, "hidden_size": 64,
    "depths": [2, 2], "num_attention_heads": [2, 4], "projection_dim": 64,
    "hidden_dropout_prob": 0.0,
}
TEXT_CFG: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": TEXT_MAX_LENGTH + 2,
    "projection_dim": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
}


def build_processor() -> Any:
    from transformers import ClapFeatureExtractor, ClapProcessor

    tokenizer = clap_data.world_tokenizer(clap_data.corpus_texts(), TEXT_MAX_LENGTH)
    return ClapProcessor(feature_extractor=ClapFeatureExtractor(**FEATURES), tokenizer=tokenizer)


def build_model(vocab_size: int) -> Any:
    from transformers import ClapConfig, ClapModel

    config = ClapConfig(text_config={**TEXT_CFG, "vocab_size": vocab_size},
                        audio_config=AUDIO_CFG, projection_dim=64)
    return ClapModel(config)


def freeze_input_norm(model: Any, feature_extractor: Any, seed: int, clips: int = 256) -> None:
    """Fix HTSAT's input BatchNorm to each mel band's mean and variance over world clips and
    keep it in eval mode: with batch statistics (a tone fills one band a few frames at a time)
    the tiny model learnt pitch several times slower. The statistics ship in the weights."""
    import torch

    rng = np.random.default_rng([seed, 3])
    sample = np.stack([clap_data.example(rng, i)[1] for i in range(clips)])
    bands = clap_data.log_mel(sample, feature_extractor)[:, 0].reshape(-1, sample_bands(model))
    norm = model.audio_model.audio_encoder.batch_norm
    with torch.no_grad():
        norm.running_mean.copy_(bands.mean(0))
        norm.running_var.copy_(bands.var(0))
    norm.eval()
    norm.train = lambda mode=True: norm  # model.train() must not switch it back


def sample_bands(model: Any) -> int:
    return int(model.config.audio_config.num_mel_bins)


# ---- batches ---------------------------------------------------------------------------------
def draw_batch(seed: int, step: int, size: int, text_negatives: int, audio_negatives: float
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Step ``step``'s batch, from its own generator ``(seed, 1, step)``: the clips (the true
    ones, then the edited ones), the texts (the true ones, then the edited ones) and
    ``positive[i, j]``: text j describes clip i."""
    rng = np.random.default_rng([seed, 1, step])
    clips, texts, hard_clips, hard_texts, pitches = [], [], [], [], []
    hard_pitches = []
    for i in range(size):
        scene, audio, text = clap_data.example(rng, step * size + i)
        clips.append(audio)
        texts.append(text)
        pitches.append(clap_data.scene_pitches(scene))
        hard_texts += clap_data.swapped_texts(scene, rng, text_negatives)
        if rng.random() < audio_negatives:
            edit = clap_data.AUDIO_EDITS[int(rng.integers(len(clap_data.AUDIO_EDITS)))]
            changed = clap_data.edited_scene(scene, edit, rng)
            if changed is not None:
                hard_clips.append(clap_data.audio_of(changed))
                hard_pitches.append(clap_data.scene_pitches(changed))
    all_texts = texts + hard_texts
    signatures = [clap_data.signature(t) for t in all_texts]
    positive = np.array([[clap_data.compatible(s, p) for s in signatures]
                         for p in pitches + hard_pitches], dtype=bool)
    return np.stack(clips + hard_clips), all_texts, positive


def _balanced_bce(logits: Any, positive: Any) -> Any:
    """Sigmoid loss with the positive and the negative pairs weighted alike: it calibrates an
    absolute threshold without the many negatives drowning the contrastive term."""
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, positive.float(), reduction="none")
    return (loss[positive].mean() + loss[~positive].mean()) / 2


def embed(model: Any, features: Any, tokens: dict[str, Any]) -> tuple[Any, Any]:
    """Unit audio and text embeddings, computed as ``clap_score`` computes them."""
    import torch.nn.functional as F

    audio = model.audio_projection(model.audio_model(input_features=features).pooler_output)
    text = model.text_projection(model.text_model(input_ids=tokens["input_ids"],
                                                  attention_mask=tokens["attention_mask"]
                                                  ).pooler_output)
    return F.normalize(audio, dim=-1), F.normalize(text, dim=-1)


def train(out_dir: Path, steps: int = 1200, batch: int = 48, seed: int = 0, threads: int = 2,
          text_negatives: int = 3, audio_negatives: float = 0.5, lr: float = 1e-3,
          log_every: int = 50, eval_clips: int = 400) -> dict[str, Any]:
    """Train the demo CLAP, write the checkpoint under ``out_dir`` and return its card (measured
    on ``eval_clips`` validation and as many test clips)."""
    import torch
    from safetensors.torch import load_file, save_file

    from pipeline.demo_models.clap_eval import write_card

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    fe, tok = processor.feature_extractor, processor.tokenizer
    model = build_model(len(tok))
    model.train()
    freeze_input_norm(model, fe, seed)
    sigmoid = torch.nn.Parameter(torch.tensor([math.log(10.0), -5.0]))  # log scale, bias
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2] + [sigmoid]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    warmup, t0 = max(1, steps // 20), time.perf_counter()
    for step in range(steps):
        rate = lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = rate
        clips, texts, positive_np = draw_batch(seed, step, batch, text_negatives, audio_negatives)
        positive = torch.from_numpy(positive_np)
        tokens = tok(texts, padding=True, truncation=True, return_tensors="pt")
        audio, text = embed(model, clap_data.log_mel(clips, fe), tokens)
        cos = audio @ text.T
        logits = model.logit_scale_a.exp() * cos
        # audio -> text over every text, text -> audio over every clip (the edited clips are
        # the hard negatives of this direction)
        contrastive = (multi_positive_nll(logits, positive)
                       + multi_positive_nll(logits.T, positive.T)) / 2
        calibration = _balanced_bce(sigmoid[0].exp() * cos + sigmoid[1], positive)
        loss = contrastive + calibration
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale_a.clamp_(0, math.log(100))
        if log_every and (step % log_every == 0 or step == steps - 1):
            subtitled = torch.tensor([clap_data.signature(t)[0] == "pitches"  # type: ignore[index]
                                      for t in texts[:batch]])
            hits = positive[torch.arange(batch), logits[:batch].argmax(dim=1)][subtitled].float().mean()
            print(f"step {step:5d}  loss {loss.item():.3f}  ({contrastive.item():.3f} + "
                  f"{calibration.item():.3f})  batch R@1 (subtitles) {hits.item():.2f}  lr {rate:.2e}  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    train_s = time.perf_counter() - t0
    model.eval()
    model.save_pretrained(str(out_dir))  # config.json + model.safetensors (fp32)
    weights = out_dir / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(weights),
              metadata={"format": "pt"})
    processor.save_pretrained(str(out_dir))
    return write_card(out_dir, seed=seed, steps=steps, batch=batch, threads=threads,
                      text_negatives=text_negatives, audio_negatives=audio_negatives, lr=lr,
                      train_s=train_s, hardware=f"CPU, {threads} threads ({os.cpu_count()} cores)",
                      eval_clips=eval_clips)


def cmd_train_demo_clap(args: argparse.Namespace) -> int:
    # Passive OpenMP waiting on a shared machine (see train-demo-model); set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    card = train(Path(args.out), steps=args.steps, batch=args.batch, seed=args.seed,
                 threads=args.threads, text_negatives=args.text_negatives,
                 audio_negatives=args.audio_negatives, lr=args.lr, eval_clips=args.eval_clips)
    print(json.dumps({k: v for k, v in card.items() if k != "config"}, indent=2))
    return 0


def register_cli(add: Any) -> None:
    p = add("train-demo-clap", "train the tiny CLAP of the demo on the sample world's tone "
            "bursts (CPU, minutes) and write its checkpoint, processor and card",
            cmd_train_demo_clap, "xmodal train-demo-clap --out models/demo-clap --steps 1200")
    p.add_argument("--out", required=True, help="output directory (models/demo-clap)")
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps (default 1200)")
    p.add_argument("--batch", type=int, default=48, help="clips per step (default 48)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--text-negatives", type=int, default=3,
                   help="edited texts per clip (default 3)")
    p.add_argument("--audio-negatives", type=float, default=0.5,
                   help="share of clips that also get an edited audio (default 0.5)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--eval-clips", type=int, default=400,
                   help="held-out clips for the card, validation and test each (default 400)")
