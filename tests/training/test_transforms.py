"""Modality dropout as a batch transform: masks, fill values, keep-one and rates."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.transforms import ModalityDropout


def batch(n: int) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(n, 3, 4, 4) + 1, "audio": torch.rand(n, 50) + 1, "text": torch.full((n, 6), 7)}


def test_no_dropout_is_the_identity_with_full_masks() -> None:
    b = batch(8)
    out = ModalityDropout({"image": 0.0, "audio": 0.0, "text": 0.0}, seed=0)(b)
    assert all(torch.equal(out[k], b[k]) for k in b)
    assert all(out[f"{k}_present"].all() for k in b)


def test_dropped_modalities_are_filled_and_masked_and_one_is_always_kept() -> None:
    b = batch(64)
    out = ModalityDropout({"image": 1.0, "audio": 1.0, "text": 1.0}, fill={"image": 0.0, "audio": 0.0, "text": 1},
                          seed=0)(b)
    masks = torch.stack([out[f"{k}_present"] for k in ("image", "audio", "text")], 1)
    assert (masks.sum(1) == 1).all()  # keep_one: exactly one survivor per sample
    assert len({int(i) for i in masks.float().argmax(1)}) == 3  # the survivor is chosen at random
    for key, fill in (("image", 0.0), ("audio", 0.0), ("text", 1)):
        m = out[f"{key}_present"]
        assert torch.equal(out[key][m], b[key][m])
        assert (out[key][~m] == fill).all()
    gone = ModalityDropout({"image": 1.0, "audio": 1.0}, keep_one=False)(b)
    assert not gone["image_present"].any() and (gone["audio"] == 0).all()


def test_rates_follow_p_and_existing_masks_are_respected() -> None:
    b = batch(4000)
    b["audio_present"] = torch.arange(4000) % 2 == 0  # half the samples have no audio at all
    out = ModalityDropout({"image": 0.3, "audio": 0.1}, keep_one=False, seed=1)(b)
    assert out["image_present"].float().mean().item() == pytest.approx(0.7, abs=0.03)
    assert not out["audio_present"][1::2].any()
    assert out["audio_present"][0::2].float().mean().item() == pytest.approx(0.9, abs=0.03)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ModalityDropout({"image": 1.5})
    with pytest.raises(KeyError, match="video"):
        ModalityDropout({"video": 0.5})(batch(2))
