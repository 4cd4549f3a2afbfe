from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.run.config import ConfigError, load_config, parse_config

BASE = {"dataset": "d", "version": "v1", "inputs": ["m.jsonl"]}


def test_bare_stage_names_and_defaults() -> None:
    cfg = parse_config({**BASE, "stages": ["placeholder_lint", {"name": "media_check", "params": {"decode": False}}]})
    assert [s.name for s in cfg.stages] == ["placeholder_lint", "media_check"]
    assert cfg.stages[1].typed_params().decode is False  # type: ignore[attr-defined]
    assert cfg.release.overwrite is False and cfg.ray.address is None


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"stages": ["no_such_stage"]}, "stages[0].name: unknown stage 'no_such_stage'; known stages: "),
        (
            {"stages": [{"name": "placeholder_lint", "params": {"image_vocab_size": 0}}]},
            "stages[0].params.image_vocab_size: Input should be greater than 0",
        ),
        (
            {"stages": [{"name": "media_check", "params": {"nope": 1}}]},
            "stages[0].params.nope: Extra inputs are not permitted",
        ),
        ({"release": {"output": "x", "overwite": True}}, "release.overwite: Extra inputs are not permitted"),
        (
            {"placeholder_vocab": {"picture": 5}},
            "placeholder_vocab.picture.[key]: Input should be 'image', 'audio' or 'video'",
        ),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
    ],
)
def test_errors_name_the_key_path_and_allowed_values(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **patch})
    assert message in str(err.value)


def test_config_hash_changes_with_the_config() -> None:
    a, b = parse_config(BASE), parse_config({**BASE, "version": "v2"})
    assert a.config_hash() == parse_config(dict(BASE)).config_hash() != b.config_hash()
    assert a.config_hash() != parse_config({**BASE, "release": {"shard_target_bytes": 10**6}}).config_hash()
    assert a.config_hash() != parse_config({**BASE, "stages": ["placeholder_lint"]}).config_hash()


def test_config_hash_ignores_where_a_build_runs_and_is_delivered() -> None:
    moved = parse_config({**BASE, "ray": {"address": "ray://head:10001", "num_cpus": 64},
                          "release": {"output": "s3://bucket/releases", "overwrite": True,
                                      "build_dir": "/scratch", "upload_attempts": 9}})
    assert moved.config_hash() == parse_config(BASE).config_hash()


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    assert load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml").dataset == "sample-world"
