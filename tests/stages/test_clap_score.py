"""clap_score (after decode_media) against a direct ClapModel computation on the same inputs,
resampling, text choice, and its guards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pyarrow as pa
import pytest
import soundfile
import torch
from transformers import ClapModel, ClapProcessor

from pipeline.run.local_runner import read_inputs, run_stages
from pipeline.world import generate_world
from schemas.reason_codes import ReasonCode
from stages.clap_score import ClapScore, clip_texts
from stages.decode_media import DecodeMedia
from tests.stages.tiny_models import CLAP_RATE, write_tiny_clap

LOW, FUSION = str(ReasonCode.LOW_SCORE), str(ReasonCode.FUSION)


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny")


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    root = tmp_path_factory.mktemp("world")
    generate_world(root, n=16, fault_rate=0.0, seed=5)
    rows = read_inputs([str(root / "manifest.jsonl")], 4 << 20)
    return rows.filter(pa.compute.is_in(rows["kind"], pa.array(["segment", "text"])))


def decode(rows: pa.Table, rate: int = CLAP_RATE) -> pa.Table:
    stage = DecodeMedia({"images": False, "audio_sample_rate": rate, "max_audio_s": 2.0})
    return run_stages(rows, [stage]).table


def score(rows: pa.Table, checkpoint: Path, **params: Any) -> pa.Table:
    return run_stages(rows, [ClapScore({"checkpoint": str(checkpoint), **params})]).table


def direct(checkpoint: Path, audio: list[np.ndarray], texts: list[str]) -> np.ndarray:
    """Cosines from ClapProcessor + ClapModel.get_*_features, one pair at a time."""
    model = ClapModel.from_pretrained(str(checkpoint), local_files_only=True).eval()
    processor = ClapProcessor.from_pretrained(str(checkpoint), local_files_only=True)
    out = []
    with torch.inference_mode():
        for clip, text in zip(audio, texts, strict=True):
            inputs = processor(audio=[clip[:CLAP_RATE]], text=[text], sampling_rate=CLAP_RATE,
                               return_tensors="pt")
            a = model.get_audio_features(input_features=inputs["input_features"]).pooler_output
            t = model.get_text_features(input_ids=inputs["input_ids"],
                                        attention_mask=inputs["attention_mask"]).pooler_output
            out.append(float((a @ t.T)[0, 0]))
    return np.array(out)


def wav_of(row: dict[str, Any]) -> np.ndarray:
    samples, rate = soundfile.read(Path(row["manifest_root"]) / row["media"][1]["uri"],
                                   dtype="float32")
    assert rate == CLAP_RATE
    return samples


def test_scores_equal_direct_clap(tiny_clap: Path, segments: pa.Table) -> None:
    out = score(decode(segments), tiny_clap).to_pylist()
    segs = [r for r in segments.to_pylist() if r["kind"] == "segment"]
    texts = [" ".join(s["text"] for s in r["subtitles"]) for r in segs]
    want = direct(tiny_clap, [wav_of(r) for r in segs], texts)
    got = {r["id"]: r for r in out}
    np.testing.assert_allclose([got[r["id"]]["clap_score"] for r in segs], want, atol=2e-5)
    first = got[segs[0]["id"]]
    assert first["clap_model"].endswith("@unpinned") and first["decoded_audio"] is None
    emb = np.asarray(first["clap_audio_emb"], np.float32)
    assert emb.shape == (1, 16) and abs(np.linalg.norm(emb) - 1) < 2e-3
    assert all(r["clap_score"] is None and r["status"] == "ok" for r in out if r["kind"] == "text")


def test_audio_at_another_rate_is_resampled_with_librosa(tiny_clap: Path,
                                                         segments: pa.Table) -> None:
    out = score(decode(segments, rate=22_050), tiny_clap).to_pylist()
    seg = next(r for r in segments.to_pylist() if r["kind"] == "segment")
    audio = librosa.resample(wav_of(seg)[: 2 * CLAP_RATE], orig_sr=CLAP_RATE, target_sr=22_050)
    back = librosa.resample(audio, orig_sr=22_050, target_sr=CLAP_RATE)
    want = direct(tiny_clap, [back], [" ".join(s["text"] for s in seg["subtitles"])])
    got = next(r for r in out if r["id"] == seg["id"])
    assert got["clap_score"] == pytest.approx(want[0], abs=2e-5)


def test_low_score_and_non_finite_audio(tiny_clap: Path, segments: pa.Table,
                                        tmp_path: Path) -> None:
    seg = next(r for r in segments.to_pylist() if r["kind"] == "segment")
    samples = wav_of(seg)
    samples[4000:4100] = np.nan
    soundfile.write(tmp_path / "nan.wav", samples, CLAP_RATE, subtype="FLOAT")
    broken = {**seg, "id": "seg-nan", "manifest_root": str(tmp_path),
              "media": [seg["media"][0] | {"uri": str(Path(seg["manifest_root"]) /
                                                      seg["media"][0]["uri"])},
                        seg["media"][1] | {"uri": "nan.wav", "sha256": None}]}
    rows = pa.concat_tables([segments, pa.Table.from_pylist([broken], schema=segments.schema)])
    out = {r["id"]: r for r in score(decode(rows), tiny_clap, min_score=1.0).to_pylist()}
    assert out["seg-nan"]["reject_code"] == FUSION
    assert "non-finite" in out["seg-nan"]["reject_detail"]
    others = [r for r in out.values() if r["kind"] == "segment" and r["id"] != "seg-nan"]
    assert others and all(r["reject_code"] == LOW and r["reject_stage"] == "clap_score"
                          for r in others)


def test_batch_top_fraction(tiny_clap: Path, segments: pa.Table) -> None:
    out = [r for r in score(decode(segments), tiny_clap, keep_top_fraction=0.5).to_pylist()
           if r["kind"] == "segment"]
    kept = [r["clap_score"] for r in out if r["status"] == "ok"]
    dropped = [r["clap_score"] for r in out if r["reject_code"] == LOW]
    assert kept and dropped and min(kept) > max(dropped)


def test_texts_of_segments_and_document_audio_items() -> None:
    seg = {"kind": "segment", "content": "<|audio_start|><|audio_pad|><|audio_end|> A ball.",
           "media": [{"modality": "audio"}], "items": None,
           "subtitles": [{"text": "the ball moves left"}, {"text": "with a tone"}]}
    assert clip_texts(seg, "subtitles") == ["the ball moves left with a tone"]
    assert clip_texts(seg, "content") == ["A ball."]
    doc = {"kind": "document", "content": "", "subtitles": None,
           "media": [{"modality": "image"}, {"modality": "audio"}, {"modality": "audio"}],
           "items": [{"type": "text", "text": "Intro."}, {"type": "audio", "media_index": 1},
                     {"type": "text", "text": "A 440 Hz tone."}, {"type": "image", "media_index": 0},
                     {"type": "audio", "media_index": 2}]}
    assert clip_texts(doc, "subtitles") == ["A 440 Hz tone.", "A 440 Hz tone."]


def test_checkpoint_config_is_what_the_stage_loads(tiny_clap: Path) -> None:
    config = json.loads((tiny_clap / "config.json").read_text())
    assert config["audio_config"]["enable_fusion"] is False
    processor = json.loads((tiny_clap / "processor_config.json").read_text())
    assert processor["feature_extractor"]["truncation"] == "rand_trunc"
