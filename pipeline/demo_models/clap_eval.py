"""Evaluation of the demo CLAP and its model card.

:func:`evaluate` scores held-out world clips through the ``clap_score`` stage's own encoders
(the loader, feature extractor, tokenizer and pooling the pipeline uses), against their true
subtitles and sentences, the subtitles of another clip (audio pointers shifted by one: each
clip heard against its neighbour's text) and one-attribute text edits (a pitch replaced, two
swapped, a burst dropped or added). :func:`write_card` picks the threshold on one held-out set
and reports on another, as the demo CLIP's card does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo_models import clap_data

# Half a percent of clean validation pairs under the threshold (the issue allows 1% lost).
THRESHOLD_QUANTILE = 0.005
EVAL_CLIPS = 400
VALIDATION_SEED, TEST_SEED = 1001, 2002


def load_scorer(model_dir: Path) -> Any:
    """A set-up ``clap_score`` stage on the CPU: what the pipeline would run."""
    from stages.clap_score import ClapScore

    stage = ClapScore({"checkpoint": str(model_dir), "device": "cpu"})
    stage.setup()
    return stage


def embeddings(stage: Any, clips: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    audio, audio_ok = stage.encode_audio(clips)
    text, text_ok = stage.encode_texts(texts)
    if not (audio_ok.all() and text_ok.all()):
        raise ValueError("non-finite CLAP embeddings")
    return audio.cpu().numpy(), text.cpu().numpy()


def evaluate(model_dir: Path, seed: int, n: int = EVAL_CLIPS, stage: Any = None) -> dict[str, Any]:
    """Scores of held-out clips: ``scores[kind]`` for the clean subtitle and sentence pairs,
    ``other_clip`` (clip i with clip i+1's subtitles), and each text edit; R@1 both ways over
    the subtitle texts (a hit is a text that describes the clip, a clip the text describes)."""
    from pipeline.world.segments import plan_segment_scene

    stage = stage or load_scorer(model_dir)
    rng = np.random.default_rng([seed, 2])
    scenes = [plan_segment_scene(f"eval-{i}", rng) for i in range(n)]
    clips = [clap_data.audio_of(s) for s in scenes]
    subtitles, contents = zip(*(clap_data.scene_texts(s) for s in scenes), strict=True)
    pairs: list[tuple[int, str, str]] = []  # (clip, text, kind)
    for i, scene in enumerate(scenes):
        pairs += [(i, subtitles[i], "clean"), (i, contents[i], "clean_content"),
                  (i, subtitles[(i + 1) % n], "other_clip")]
        for edit in clap_data.TEXT_EDITS:
            changed = clap_data.edited_scene(scene, edit, rng)
            if changed is not None:
                pairs.append((i, clap_data.scene_texts(changed)[0], edit))
    texts = list(dict.fromkeys([t for _, t, _ in pairs]))
    audio, text = embeddings(stage, clips, texts)
    sims = audio @ text.T
    col = {t: j for j, t in enumerate(texts)}
    pitches = [clap_data.scene_pitches(s) for s in scenes]
    sub_cols = np.array([col[t] for t in subtitles])
    i2t = np.mean([clap_data.compatible(clap_data.signature(subtitles[int(np.argmax(sims[i, sub_cols]))]),
                                        pitches[i]) for i in range(n)])
    t2i = np.mean([clap_data.compatible(clap_data.signature(subtitles[i]),
                                        pitches[int(np.argmax(sims[:, col[subtitles[i]]]))])
                   for i in range(n)])
    scores: dict[str, list[float]] = {}
    describes: dict[str, list[bool]] = {}
    for i, t, kind in pairs:
        scores.setdefault(kind, []).append(float(sims[i, col[t]]))
        describes.setdefault(kind, []).append(clap_data.compatible(clap_data.signature(t), pitches[i]))
    return {"r1_audio_to_text": float(i2t), "r1_text_to_audio": float(t2i), "clips": n,
            "scores": {k: np.asarray(v) for k, v in scores.items()},
            "describes": {k: np.asarray(v) for k, v in describes.items()}}


def measure(out_dir: Path, clips: int = EVAL_CLIPS) -> dict[str, Any]:
    """The card's measured fields: thresholds on ``clips`` validation clips
    (``THRESHOLD_QUANTILE`` of clean pairs under them), then R@1 and clean / mismatched pair
    scores on ``clips`` test clips.
    A mismatch that still describes the clip (a neighbour with the same pitches) is left out of
    its rejection rate and counted apart."""
    from access.models import file_sha256

    stage = load_scorer(out_dir)
    val = evaluate(out_dir, VALIDATION_SEED, clips, stage=stage)
    test = evaluate(out_dir, TEST_SEED, clips, stage=stage)
    threshold = float(np.quantile(val["scores"]["clean"], THRESHOLD_QUANTILE))
    content_threshold = float(np.quantile(val["scores"]["clean_content"], THRESHOLD_QUANTILE))
    clean = test["scores"]["clean"]
    mismatched: dict[str, Any] = {}
    for kind, values in test["scores"].items():
        if kind.startswith("clean"):
            continue
        wrong = ~test["describes"][kind]
        mismatched[kind] = {
            "pairs": int(wrong.sum()), "still_describing_the_clip": int((~wrong).sum()),
            "mean_score": round(float(values[wrong].mean()), 4),
            "rejected_at_threshold": round(float(np.mean(values[wrong] < threshold)), 4)}
    weights = out_dir / "model.safetensors"
    return {
        "weights_sha256": file_sha256(weights),
        "weights_bytes": weights.stat().st_size,
        "test_clips": test["clips"],
        "test_r1_audio_to_text": round(test["r1_audio_to_text"], 4),
        "test_r1_text_to_audio": round(test["r1_text_to_audio"], 4),
        "recommended_min_score": round(threshold, 4),
        "recommended_clap_score_params": {"min_score": round(threshold, 4),
                                          "segment_text": "subtitles"},
        "test_clean_pairs": int(clean.size),
        "test_mean_clean_score": round(float(clean.mean()), 4),
        "test_clean_pairs_below_threshold": round(float(np.mean(clean < threshold)), 4),
        "content_sentence": {
            "min_score": round(content_threshold, 4),
            "mean_clean_score": round(float(test["scores"]["clean_content"].mean()), 4),
            "clean_below_threshold": round(float(np.mean(
                test["scores"]["clean_content"] < content_threshold)), 4)},
        "mismatched": mismatched,
    }


def write_card(out_dir: Path, **facts: Any) -> dict[str, Any]:
    """The card: training facts, then what :func:`measure` finds."""
    config = json.loads((out_dir / "config.json").read_text())
    clips = int(facts.get("eval_clips", EVAL_CLIPS))
    card = {
        "model": "xmodal demo CLAP (transformers ClapModel, trained on the sample world's "
                 "tone bursts)",
        "seed": facts["seed"], "steps": facts["steps"], "batch": facts["batch"],
        "text_negatives_per_clip": facts["text_negatives"],
        "audio_negatives_share": facts["audio_negatives"], "lr": facts["lr"],
        "threads": facts["threads"], "train_seconds": round(facts["train_s"], 1),
        "hardware": facts["hardware"],
        "config": {"audio": {k: config["audio_config"].get(k) for k in (
                       "spec_size", "num_mel_bins", "window_size", "patch_size",
                       "patch_embeds_hidden_size", "hidden_size", "depths",
                       "num_attention_heads")},
                   "text": {k: config["text_config"].get(k) for k in (
                       "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "max_position_embeddings")},
                   "projection_dim": config.get("projection_dim")},
        **measure(out_dir, clips),
        "reproduce": [
            f"xmodal train-demo-clap --out models/demo-clap --steps {facts['steps']} "
            f"--batch {facts['batch']} --seed {facts['seed']} --threads {facts['threads']} "
            f"--text-negatives {facts['text_negatives']} "
            f"--audio-negatives {facts['audio_negatives']:g} --lr {facts['lr']:g}"
            + (f" --eval-clips {clips}" if clips != EVAL_CLIPS else "")],
        "input": "16 kHz mono, first 8 s (decode_media audio_sample_rate 16000); the "
                 "ClapFeatureExtractor settings are in processor_config.json",
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
