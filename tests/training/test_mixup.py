"""Cross-modal mixup: lambda = 1 is the identity, one lambda per pair shared by every modality,
feature level, soft targets, MixGen, and the collate functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.training.mixup import (
    MixGenCollate,
    MixupCollate,
    mix,
    mix_batches,
    mix_features,
    mixgen,
    mixup_targets,
    sample_lambdas,
)

KEYS = ("image", "audio", "features", "labels")


def batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 3, 8, 8, generator=g),
        "audio": torch.randn(n, 1, 400, generator=g),
        "features": torch.randn(n, 16, generator=g),
        "labels": torch.nn.functional.one_hot(torch.arange(n) % 4, 4).float(),
        "index": torch.arange(n),
    }


def samples(n: int = 6) -> list[dict[str, torch.Tensor]]:
    b = batch(n)
    return [{k: v[i] for k, v in b.items()} for i in range(n)]


def test_lambda_one_is_the_identity() -> None:
    a, b = batch(seed=0), batch(seed=1)
    out = mix_batches(a, b, torch.ones(6), KEYS)
    assert all(torch.equal(out[k], a[k]) for k in a)
    collated = MixupCollate(KEYS, alpha=0.0)(samples())  # alpha <= 0: every lambda is 1
    assert torch.equal(collated.lam, torch.ones(6))
    assert all(torch.equal(collated.batch[k], batch()[k]) for k in batch())


@pytest.mark.parametrize("per_sample", [False, True])
def test_one_lambda_per_pair_is_shared_by_all_modalities(per_sample: bool) -> None:
    a = batch()
    mixed = MixupCollate(KEYS, alpha=0.4, per_sample=per_sample, seed=7)(samples())
    lam, perm = mixed.lam, mixed.perm
    assert lam.shape == (6,) and ((lam >= 0) & (lam <= 1)).all()
    assert sorted(perm.tolist()) == list(range(6))
    assert (lam.unique().numel() == 1) != per_sample
    for key in KEYS:
        w = lam.view(-1, *[1] * (a[key].dim() - 1))
        want = w * a[key] + (1 - w) * a[key][perm]
        assert torch.allclose(mixed.batch[key], want, atol=1e-6)
    # each pair's lambda, recovered from each modality separately, is the same number
    for i in range(6):
        if perm[i] == i:
            continue
        recovered = []
        for key in ("features", "audio"):
            x, y, m = a[key][i].flatten(), a[key][perm[i]].flatten(), mixed.batch[key][i].flatten()
            recovered.append(float(((m - y) @ (x - y)) / ((x - y) @ (x - y))))
        assert recovered == pytest.approx([float(lam[i])] * 2, abs=1e-5)
    assert torch.allclose(mixed.batch["labels"].sum(1), torch.ones(6))  # label vectors stay distributions
    assert torch.equal(mixed.batch["index"], a["index"])  # keys not listed pass through


def test_feature_level_returns_the_batch_unmixed_with_lambdas_for_the_model() -> None:
    out = MixupCollate(["image"], alpha=1.0, level="feature", seed=1)(samples())
    assert out.level == "feature" and torch.equal(out.batch["image"], batch()["image"])
    feats = {"img": torch.randn(6, 8), "txt": torch.randn(6, 8)}
    mixed = mix_features(feats, out.lam, out.perm)
    for k, v in feats.items():
        assert torch.allclose(mixed[k], out.lam[:, None] * v + (1 - out.lam[:, None]) * v[out.perm])
    assert all(torch.equal(t, feats[k]) for k, t in mix_features(feats, torch.ones(6), out.perm).items())


def test_mixup_targets_put_each_pair_weight_on_both_partners() -> None:
    lam, perm = torch.tensor([0.7, 0.2, 1.0, 0.5]), torch.tensor([1, 0, 3, 3])
    t = mixup_targets(lam, perm)
    assert torch.allclose(t, torch.tensor([[0.7, 0.3, 0, 0], [0.8, 0.2, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]))
    assert torch.allclose(t.sum(1), torch.ones(4))


def test_lambdas_follow_the_beta_distribution() -> None:
    rng = np.random.default_rng(0)
    lam = sample_lambdas(0.5, 20_000, rng, per_sample=True)
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1 / 8, abs=0.005)  # Beta(a, a): 1 / (4 (2a + 1))
    assert torch.equal(sample_lambdas(0.0, 3, rng), torch.ones(3))


def test_mixup_refuses_class_indices_and_shape_mismatch() -> None:
    with pytest.raises(TypeError, match="one-hot"):
        mix(torch.arange(4), torch.arange(4), torch.ones(4))
    with pytest.raises(ValueError, match="shapes"):
        mix(torch.ones(4, 2), torch.ones(4, 3), torch.ones(4))
    with pytest.raises(KeyError, match="audio"):
        mix_batches({"image": torch.ones(2)}, {"image": torch.ones(2)}, torch.ones(2), ["image", "audio"])


def test_mixgen_mixes_images_and_concatenates_texts() -> None:
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    texts = ["a red square", "a blue circle", "a green star", "a grey ball"]
    perm, lam = torch.tensor([1, 0, 3, 2]), torch.full((4,), 0.5)
    out, new = mixgen(images, texts, lam, perm, num_mixed=2)
    assert out[:, 0, 0, 0].tolist() == [0.5, 0.5, 2.0, 3.0]
    assert new == ["a red square a blue circle", "a blue circle a red square", "a green star", "a grey ball"]
    same, _ = mixgen(images, texts, torch.ones(4), perm)
    assert torch.equal(same, images)

    items = [{"image": images[i], "text": texts[i]} for i in range(4)]
    collate = MixGenCollate("image", "text", lam=0.5, fraction=0.5, seed=0,
                            tokenize=lambda ts: torch.tensor([len(t) for t in ts]))
    result = collate(items)
    assert result.lam.tolist() == [0.5, 0.5, 1.0, 1.0]
    p = result.perm.tolist()
    assert result.batch["text"].tolist() == [len(texts[i]) + 1 + len(texts[p[i]]) for i in range(2)] + [12, 11]
