"""Mixing: target proportions by samples or tokens on 100k rows, reproducible per seed, small
pools an error or up-sampled with a recorded factor, and ``xmodal mix`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.training.mixing import MixError, mix_pools, parse_mix_spec

SHARES = {"text_retention": 0.3, "coarse_image_text": 0.4, "interleaved": 0.2, "synthetic_dialogue": 0.1}
SIZES = {"text_retention": 80_000, "coarse_image_text": 110_000, "interleaved": 55_000, "synthetic_dialogue": 20_000}


def pool_table(name: str, rows: int, seed: int) -> pa.Table:
    """Rows whose content has a pool-specific length distribution (1 to 39 words, plus an image
    span of 3 tokens in the image pools), so that sample and token proportions differ."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, {"interleaved": 40, "synthetic_dialogue": 25}.get(name, 12), rows)
    span = "<|image_start|><|image_pad|><|image_end|> " if name in ("coarse_image_text", "interleaved") else ""
    texts = np.array([span + " ".join(["w"] * n) for n in range(40)], dtype=object)
    ids = pc.binary_join_element_wise(name, pa.array(np.arange(rows).astype(str)), "-")
    tokens = lengths + (3 if span else 0)  # what the whitespace counter gives for this content
    return pa.table({"id": ids, "content": pa.array(texts[lengths], pa.string()), "num_tokens": tokens})


@pytest.fixture(scope="module")
def pools() -> dict[str, pa.Table]:
    return {name: pool_table(name, SIZES[name], i) for i, name in enumerate(SIZES)}


def spec(**overrides: object) -> object:
    data = {"seed": 7, "pools": {n: {"share": s} for n, s in SHARES.items()}}
    data.update(overrides)
    return parse_mix_spec(data)


@pytest.mark.parametrize("unit", ["samples", "tokens"])
def test_mix_hits_its_proportions_within_one_percent_on_100k_rows(pools: dict, unit: str) -> None:
    total = 100_000 if unit == "samples" else 1_000_000
    result = mix_pools(pools, spec(unit=unit, total=total, token_column="num_tokens"))
    report = result.report
    assert report["target"] == SHARES and report["unit"] == unit
    counts = {c["values"]: c["counts"] for c in pc.value_counts(result.table["mix_pool"]).to_pylist()}
    for name, share in SHARES.items():
        pool = report["pools"][name]
        assert abs(report["achieved"][name] - share) <= 0.01 * share, name
        assert counts[name] == pool["selected_rows"] == pool["unique_rows"]  # no up-sampling here
        assert pool["upsample_factor"] <= 1
    if unit == "samples":
        assert result.table.num_rows == report["achieved_total"] == 100_000
        selected = {n: report["pools"][n]["selected_rows"] for n in SHARES}
        assert selected == {n: int(s * total) for n, s in SHARES.items()}
    else:
        assert abs(report["achieved_total"] - total) <= 4 * 40  # one row's tokens per pool at most
        # token shares differ from row shares: the mix is by tokens, not rows
        rows = {n: report["pools"][n]["selected_rows"] / result.table.num_rows for n in SHARES}
        assert abs(rows["interleaved"] - SHARES["interleaved"]) > 0.05


def test_same_seed_same_mix_other_seed_other_mix(pools: dict) -> None:
    a = mix_pools(pools, spec(total=100_000))
    b = mix_pools(pools, spec(total=100_000))
    c = mix_pools(pools, spec(total=100_000, seed=8))
    assert a.table["id"].equals(b.table["id"]) and a.report == b.report
    assert not a.table["id"].equals(c.table["id"])
    # the order is shuffled across pools
    assert len(set(a.table["mix_pool"].slice(0, 50).to_pylist())) > 1


def test_a_pool_draws_the_same_rows_when_another_pool_is_added(pools: dict) -> None:
    two = parse_mix_spec({"seed": 1, "total": 1000, "shuffle": False,
                          "pools": {"text_retention": {"share": 0.5}, "interleaved": {"share": 0.5}}})
    three = parse_mix_spec({"seed": 1, "total": 2000, "shuffle": False, "pools": {
        "text_retention": {"share": 0.25}, "interleaved": {"share": 0.5}, "coarse_image_text": {"share": 0.25}}})
    tables = [mix_pools(pools, s).table for s in (two, three)]
    ids = [set(t.filter(pc.equal(t["mix_pool"], "text_retention"))["id"].to_pylist()) for t in tables]
    assert len(ids[0]) == 500 and ids[0] == ids[1]


def test_a_pool_too_small_is_an_error_naming_it(pools: dict) -> None:
    with pytest.raises(MixError, match=r"pool 'synthetic_dialogue' has 20,000 rows but its share 0.1 of 250,000 "
                                       r"needs 25,000; .* set upsample: true"):
        mix_pools(pools, spec(total=250_000))


def test_a_small_pool_may_be_upsampled_with_a_recorded_factor(pools: dict) -> None:
    overrides = {n: {"share": s, "upsample": n == "synthetic_dialogue"} for n, s in SHARES.items()}
    result = mix_pools(pools, spec(total=250_000, pools=overrides))
    pool = result.report["pools"]["synthetic_dialogue"]
    assert pool["selected_rows"] == 25_000 and pool["unique_rows"] == 20_000
    assert pool["upsample_factor"] == pytest.approx(25_000 / 20_000, abs=1e-6)
    assert result.report["achieved"]["synthetic_dialogue"] == 0.1
    dialogue = result.table.filter(pc.equal(result.table["mix_pool"], "synthetic_dialogue"))
    assert np.bincount(dialogue["mix_copy"].to_numpy()).tolist() == [20_000, 5_000]
    assert dialogue.num_rows == 25_000 and len(set(dialogue["id"].to_pylist())) == 20_000


def test_without_a_total_the_largest_mix_that_needs_no_upsampling(pools: dict) -> None:
    report = mix_pools(pools, spec()).report
    # text 80k/0.3, coarse 110k/0.4, interleaved 55k/0.2 and dialogue 20k/0.1 allow 266,666,
    # 275,000, 275,000 and 200,000 rows: the dialogue pool decides
    assert report["target_total"] == 200_000
    assert report["pools"]["synthetic_dialogue"]["selected_rows"] == 20_000


def test_windowed_parent_documents_are_left_out(tmp_path: Path) -> None:
    docs = pa.table({"id": ["d", "d-w0", "d-w1", "e"], "content": ["a b", "a", "b", "c"],
                     "doc_windows": pa.array([2, 2, 2, 1], pa.int32()),
                     "doc_window": pa.array([None, 0, 1, None], pa.int32())})
    result = mix_pools({"interleaved": docs}, parse_mix_spec({"pools": {"interleaved": {"share": 1.0}}}))
    assert sorted(result.table["id"].to_pylist()) == ["d-w0", "d-w1", "e"]
    assert result.report["pools"]["interleaved"]["excluded_windowed_parents"] == 1


def test_config_errors_name_the_key() -> None:
    with pytest.raises(MixError, match=r"shares sum to 0.9, not 1"):
        parse_mix_spec({"pools": {"a": {"share": 0.5}, "b": {"share": 0.4}}})
    with pytest.raises(MixError, match=r"pools.a.share: Input should be less than or equal to 1"):
        parse_mix_spec({"mix": {"pools": {"a": {"share": 2}}}})
    with pytest.raises(MixError, match=r"unit: Input should be 'samples' or 'tokens'"):
        parse_mix_spec({"unit": "bytes", "pools": {"a": {"share": 1}}})


def test_xmodal_mix_writes_shards_and_the_manifest_entry(tmp_path: Path, pools: dict,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    inputs = {}
    for name in SHARES:
        folder = tmp_path / "pools" / name
        folder.mkdir(parents=True)
        pq.write_table(pools[name].slice(0, 5_000), folder / "part-00000.parquet")
        inputs[name] = [str(folder)]
    config = tmp_path / "mix.yaml"
    pool_lines = "".join(f"    {n}: {{share: {s}, inputs: [{inputs[n][0]}]}}\n" for n, s in SHARES.items())
    head = f"mix:\n  seed: 3\n  unit: tokens\n  total: 20000\n  output: {tmp_path / 'out'}\n"
    config.write_text(f"{head}  pools:\n{pool_lines}")
    assert main(["mix", str(config)]) == 0
    body = json.loads((tmp_path / "out" / "mix.json").read_text())
    mixing = body["mixing"]
    assert mixing["unit"] == "tokens" and mixing["target"] == SHARES and mixing["seed"] == 3
    assert all(abs(mixing["achieved"][n] - s) <= 0.01 * s for n, s in SHARES.items())
    table = pq.read_table(tmp_path / "out" / body["shards"][0]["path"])
    assert table.num_rows == mixing["rows"] == sum(p["selected_rows"] for p in mixing["pools"].values())
    # tokens were counted from content, and agree with the fixture's own count
    assert mixing["achieved_total"] == pc.sum(table["num_tokens"]).as_py()
    assert "interleaved" in capsys.readouterr().out
    assert main(["mix", str(config)]) == 2  # an existing mix is not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["mix", str(config), "--overwrite"]) == 0
