"""Checkpoint resolution and loading: local paths, s3:// on a real S3 server (moto) copied once
per node into the cache, the Hugging Face cache offline, sha256 pins that fail fast, and the
shipped demo checkpoint."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import boto3
import pytest
import torch

from access.models import (
    CheckpointError,
    copy_s3_checkpoint,
    load_clap,
    load_open_clip,
    resolve_checkpoint,
)
from pipeline.run.config import ConfigError, parse_config
from stages.clip_score import ClipScore
from tests.stages.tiny_models import sha256_of, write_tiny_clap, write_tiny_open_clip

REPO = Path(__file__).resolve().parents[2]
WRONG = "0" * 64


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_open_clip(tmp_path_factory.mktemp("clip") / "tiny")


@pytest.fixture()
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XMODAL_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def upload_dir(bucket: str, prefix: str, local: Path) -> str:
    s3 = boto3.client("s3")
    for path in local.iterdir():
        s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def test_local_checkpoint_is_pinned_by_its_weights_file(tiny_clip: Path) -> None:
    pin = sha256_of(tiny_clip / "open_clip_model.safetensors")
    assert resolve_checkpoint(str(tiny_clip), pin) == tiny_clip.resolve()
    with pytest.raises(CheckpointError, match=f"sha256 of open_clip_model.safetensors is {pin}"):
        resolve_checkpoint(str(tiny_clip), WRONG)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tiny_clip / "missing"))
    with pytest.raises(CheckpointError, match="use a path, s3://"):
        resolve_checkpoint("https://example.com/model")


def test_wrong_sha256_fails_at_config_load_before_any_data(tiny_clip: Path) -> None:
    """The config names inputs that do not exist: the checkpoint error comes first and fast."""
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"stages\[1\]\.params.*sha256 .* expected 0{64}"):
        parse_config({"dataset": "d", "version": "v", "inputs": ["/nonexistent/manifest.jsonl"],
                      "stages": ["decode_media", {"name": "clip_score", "params": {
                          "checkpoint": str(tiny_clip), "checkpoint_sha256": WRONG}}]})
    with pytest.raises(ConfigError, match="not found"):
        parse_config({"dataset": "d", "version": "v", "inputs": ["x.jsonl"], "stages": [
            {"name": "clap_score", "params": {"checkpoint": "/nonexistent/clap"}}]})
    assert time.perf_counter() - started < 5


def test_open_clip_loads_offline_from_a_local_dir(tiny_clip: Path) -> None:
    bundle = load_open_clip(tiny_clip)
    assert bundle.image_size == 32 and bundle.resize_mode == "shortest"
    assert not bundle.model.training and bundle.tokenizer(["a red circle"]).shape == (1, 32)


@pytest.mark.s3
def test_s3_checkpoint_is_copied_once_per_node_atomically(
        s3_bucket: str, tiny_clip: Path, model_cache: Path) -> None:
    pin = sha256_of(tiny_clip / "open_clip_model.safetensors")
    uri = upload_dir(s3_bucket, "models/tiny-clip", tiny_clip)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(copy_s3_checkpoint(uri, pin)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4
    entries = [p for p in model_cache.iterdir() if not p.name.endswith(".lock")]
    assert entries == [results[0]]  # one copy, no temporary directory left behind
    mtime = (results[0] / "open_clip_model.safetensors").stat().st_mtime_ns
    assert resolve_checkpoint(uri, pin) == results[0]
    assert (results[0] / "open_clip_model.safetensors").stat().st_mtime_ns == mtime
    local, copied = load_open_clip(tiny_clip), load_open_clip(results[0])
    tokens = local.tokenizer(["a blue square"])
    with torch.inference_mode():
        assert torch.equal(local.model.encode_text(tokens), copied.model.encode_text(tokens))


@pytest.mark.s3
def test_s3_checkpoint_with_a_wrong_pin_leaves_nothing_cached(
        s3_bucket: str, tiny_clip: Path, model_cache: Path) -> None:
    uri = upload_dir(s3_bucket, "models/tiny-clip-2", tiny_clip)
    with pytest.raises(CheckpointError, match="expected 0{64}"):
        resolve_checkpoint(uri, WRONG)
    assert [p for p in model_cache.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(CheckpointError, match="no objects"):
        resolve_checkpoint(f"s3://{s3_bucket}/models/nothing-here")
    with pytest.raises(ValueError, match="sha256"):
        ClipScore({"checkpoint": uri, "checkpoint_sha256": WRONG})


def test_clap_loads_from_the_hugging_face_cache_offline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's own layout (refs/main -> snapshots/<commit>); no network is touched."""
    cache = tmp_path / "hub"
    repo = cache / "models--xmodal--tiny-clap"
    commit = "0123456789abcdef0123456789abcdef01234567"
    write_tiny_clap(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    pin = sha256_of(repo / "snapshots" / commit / "model.safetensors")
    path = resolve_checkpoint("hf:xmodal/tiny-clap", pin)
    assert path == repo / "snapshots" / commit
    assert resolve_checkpoint(f"hf:xmodal/tiny-clap@{commit}") == path
    bundle = load_clap(path)
    assert bundle.sampling_rate == 16_000 and bundle.max_samples == 16_000
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        resolve_checkpoint("hf:xmodal/absent")


def test_pickled_checkpoints_load_only_as_plain_weights(tmp_path: Path, tiny_clip: Path) -> None:
    """A .bin checkpoint goes through torch.load(weights_only=True): tensors load, a pickled
    object is refused."""
    from safetensors.torch import load_file

    state = load_file(str(tiny_clip / "open_clip_model.safetensors"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "open_clip_config.json").write_text((tiny_clip / "open_clip_config.json").read_text())
    torch.save(state, plain / "open_clip_pytorch_model.bin")
    assert load_open_clip(plain).image_size == 32
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "open_clip_config.json").write_text((tiny_clip / "open_clip_config.json").read_text())
    torch.save({**state, "payload": os.system}, evil / "open_clip_pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unsupported global"):
        load_open_clip(evil)


@pytest.mark.skipif(not (REPO / "models" / "demo-clip" / "card.json").is_file(),
                    reason="demo model not shipped")
def test_shipped_demo_checkpoint_matches_its_card() -> None:
    root = REPO / "models" / "demo-clip"
    card = json.loads((root / "card.json").read_text())
    weights = root / "open_clip_model.safetensors"
    assert sha256_of(weights) == card["weights_sha256"] and weights.stat().st_size < 8 << 20
    bundle = load_open_clip(resolve_checkpoint(str(root), card["weights_sha256"]))
    assert bundle.image_size == 64 and bundle.resize_mode == "squash"
    assert bundle.tokenizer.vocab_size == card["model_cfg"]["text_cfg"]["vocab_size"]
    assert next(bundle.model.parameters()).dtype == torch.float32
