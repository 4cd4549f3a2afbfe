"""document_interleave with CLIP similarities (``similarity=clip``): the plumbing with a tiny
random open_clip checkpoint written here, and the placement with the demo CLIP when it is
present (``models/demo-clip``, made by ``xmodal train-demo-model``). Both import torch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from stages.document_interleave import DocumentInterleave
from tests.stages.document_rows import SPAN_RE, figure_numbers, lint, shuffle_items, world_documents

DEMO_CLIP = Path(__file__).resolve().parents[2] / "models" / "demo-clip"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return shuffle_items(world_documents(tmp_path_factory.mktemp("world"), n=40, seed=2))


def tiny_clip(folder: Path) -> Path:
    """A random-weight open_clip checkpoint directory (config + safetensors), seeded."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    return folder


def test_assign_with_clip_needs_a_checkpoint_that_exists(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs clip_checkpoint"):
        DocumentInterleave({"placement": "assign"})
    with pytest.raises(ValueError, match="checkpoint .* not found"):  # when the config is read
        DocumentInterleave({"placement": "assign", "clip_checkpoint": str(tmp_path / "none")})


@pytest.mark.slow
def test_assign_with_a_clip_checkpoint_places_every_image_and_lints(world: pa.Table, tmp_path: Path) -> None:
    checkpoint = tiny_clip(tmp_path / "tiny")
    stage = DocumentInterleave({"placement": "assign", "clip_checkpoint": str(checkpoint), "min_similarity": -1.0})
    out = stage(world).to_pylist()
    assert {r["status"] for r in out} == {"ok"}
    for row, source in zip(out, world.to_pylist(), strict=True):
        # random weights decide nothing about which sentence, but every image gets one
        assert lint(row) is None and row["doc_dropped_media"] == []
        assert sorted(m["uri"] for m in row["media"]) == sorted(m["uri"] for m in source["media"])
        assert len(SPAN_RE.findall(row["content"])) == len(source["media"])
    # a threshold above every cosine drops every image, and the content still lints
    dropped = DocumentInterleave({"placement": "assign", "clip_checkpoint": str(checkpoint),
                                  "min_similarity": 1.01})(world).to_pylist()
    assert all(r["media"] == [] and lint(r) is None for r in dropped)
    assert sum(len(r["doc_dropped_media"]) for r in dropped) == sum(len(r["media"]) for r in out)


@pytest.mark.slow
@pytest.mark.skipif(not (DEMO_CLIP / "open_clip_config.json").is_file(), reason="models/demo-clip not present")
def test_demo_clip_places_each_sample_world_figure_before_its_caption(world: pa.Table) -> None:
    out = DocumentInterleave({"placement": "assign", "clip_checkpoint": str(DEMO_CLIP),
                              "min_similarity": -1.0})(world).to_pylist()
    for row in out:
        assert row["status"] == "ok" and lint(row) is None
        for match, number in zip(SPAN_RE.finditer(row["content"]), figure_numbers(row), strict=True):
            assert re.match(rf" Figure {number} shows", row["content"][match.end():]), (row["id"], number)
