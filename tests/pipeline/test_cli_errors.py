"""The mistakes a new user makes in the first hour, each tried on the real command line: exit
code 2, one line on stderr that names the culprit (file, key or value), no traceback.

Each row of MISTAKES is (id, argv, words the one line must contain). ``{world}`` is a small
sample world, ``{release}`` a real release of it (built once with ``xmodal run --local``),
``{cfg:NAME}`` a YAML config from CONFIGS written beside them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]

CONFIGS: dict[str, dict[str, Any]] = {
    "key_typo": {"relase": {"overwrite": True}},
    "nested_key_typo": {"release": {"overwirte": True}},
    "stage_typo": {"stages": ["media_chek"]},
    "data_juicer_entry": {"stages": [{"media_check": {}}]},
    "param_typo": {"stages": [{"name": "media_check", "params": {"decod": False}}]},
    "resources_typo": {"stages": [{"name": "media_check", "resources": {"num_cpu": 1}}]},
    "input_dir": {"inputs": ["{world}"]},
    "input_release_manifest": {"inputs": ["{release}/manifest.json"]},
    "bad_gate": {"gates": {"r_at_1_min": 1.5}},
}

MISTAKES: list[tuple[str, list[str], list[str]]] = [
    # xmodal check / stage on a directory and on a release's manifest.json
    ("check_dir", ["check", "{world}", "--out", "{tmp}/c"], ["{world}", "is a directory", "manifest.jsonl"]),
    ("check_release_manifest", ["check", "{release}/manifest.json", "--out", "{tmp}/c"],
     ["{release}/manifest.json", "manifest.json of a release", "expected a JSONL or Parquet manifest"]),
    ("stage_input_dir", ["stage", "media_check", "--input", "{world}", "--output", "{tmp}/s"],
     ["--input", "{world}", "is a directory"]),
    ("stage_input_release_manifest", ["stage", "media_check", "--input", "{release}/manifest.json",
                                      "--output", "{tmp}/s"], ["--input", "manifest.json of a release"]),
    ("lint_release_manifest", ["lint", "{release}/manifest.json"],
     ["{release}/manifest.json", "not a shard", "xmodal lint {release}"]),
    ("lint_not_a_shard", ["lint", "{cfg:key_typo}"], ["{cfg:key_typo}", "expected a .parquet or .jsonl shard"]),
    ("check_missing", ["check", "{tmp}/missing.jsonl", "--out", "{tmp}/c"], ["not found", "missing.jsonl"]),
    # arguments
    ("sample_negative_n", ["sample", "--out", "{tmp}/w", "--n", "-5"], ["--n", "-5", "at least 1"]),
    ("sample_faults_over_one", ["sample", "--out", "{tmp}/w", "--faults", "1.5"],
     ["--faults", "1.5", "between 0 and 1"]),
    ("sample_n_not_a_number", ["sample", "--out", "{tmp}/w", "--n", "ten"], ["--n", "'ten'"]),
    ("no_command", [], ["COMMAND"]),
    ("unknown_command", ["chek"], ["'chek'"]),
    ("check_max_record_bytes", ["check", "{world}/manifest.jsonl", "--out", "{tmp}/c", "--max-record-bytes", "0"],
     ["--max-record-bytes", "at least 1"]),
    # stage names and parameters
    ("stage_typo", ["stage", "media_chek", "--input", "{world}/manifest.jsonl", "--output", "{tmp}/s"],
     ["'media_chek'", "did you mean 'media_check'"]),
    ("check_stages_typo",
     ["check", "{world}/manifest.jsonl", "--out", "{tmp}/c", "--stages", "object_boxes,media_chek"],
     ["'media_chek'", "did you mean 'media_check'"]),
    ("stages_typo", ["stages", "clip_scor"], ["'clip_scor'", "did you mean 'clip_score'"]),
    ("set_param_typo", ["stage", "media_check", "--input", "{world}/manifest.jsonl", "--output", "{tmp}/s",
                        "--set", "decod=false"], ["decod", "did you mean 'decode'"]),
    ("set_without_value", ["stage", "media_check", "--input", "{world}/manifest.jsonl", "--output", "{tmp}/s",
                           "--set", "decode"], ["--set", "'decode'", "key=value"]),
    ("set_out_of_range", ["stage", "object_augment", "--input", "{world}/manifest.jsonl", "--output", "{tmp}/s",
                          "--set", "copies=-1"], ["copies", "greater than or equal to 0"]),
    # configs
    ("config_missing", ["run", "{tmp}/missing.yaml"], ["{tmp}/missing.yaml", "not found"]),
    ("config_is_dir", ["run", "{world}"], ["{world}", "is a directory", "YAML config"]),
    ("config_bad_yaml", ["run", "{cfg:bad_yaml}"], ["{cfg:bad_yaml}", "not valid YAML"]),
    ("config_key_typo", ["run", "{cfg:key_typo}"], ["{cfg:key_typo}", "relase", "did you mean 'release'"]),
    ("config_nested_key_typo", ["run", "{cfg:nested_key_typo}"], ["release.overwirte", "did you mean 'overwrite'"]),
    ("config_stage_typo", ["run", "{cfg:stage_typo}"],
     ["stages[0].name", "'media_chek'", "did you mean 'media_check'"]),
    ("config_data_juicer_entry", ["run", "{cfg:data_juicer_entry}"],
     ["stages[0]", '{"media_check": {}}', "`- media_check`", "`- name: media_check`", "{name: media_check}"]),
    ("config_param_typo", ["run", "{cfg:param_typo}"], ["stages[0].params.decod", "did you mean 'decode'"]),
    ("config_resources_typo", ["run", "{cfg:resources_typo}"], ["stages[0].resources.num_cpu", "'num_cpus'"]),
    ("config_input_dir", ["run", "{cfg:input_dir}"], ["inputs[0]", "{world}", "is a directory"]),
    ("config_input_release_manifest", ["run", "{cfg:input_release_manifest}"],
     ["inputs[0]", "manifest.json of a release"]),
    ("config_gate_out_of_range", ["run", "{cfg:bad_gate}"], ["gates.r_at_1_min", "less than or equal to 1"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A sample world, a real release of it, and the configs of CONFIGS beside them."""
    root = tmp_path_factory.mktemp("cli-errors")
    world = root / "world"
    assert main(["sample", "--out", str(world), "--n", "8", "--seed", "3"]) == 0
    release_cfg = root / "release.yaml"
    release_cfg.write_text(yaml.safe_dump({
        "dataset": "w", "version": "v1", "inputs": [str(world / "manifest.jsonl")], "stages": ["placeholder_lint"],
        "release": {"output": str(root / "releases")}}))
    assert main(["run", str(release_cfg), "--local"]) == 0
    out = {"world": str(world), "release": str(root / "releases" / "w" / "v1"), "tmp": str(root)}
    base = {"dataset": "w", "version": "v2", "inputs": [str(world / "manifest.jsonl")]}
    for name, patch in CONFIGS.items():
        text = yaml.safe_dump({**base, **patch}).replace("{world}", out["world"]).replace("{release}", out["release"])
        (root / f"{name}.yaml").write_text(text)
        out[f"cfg:{name}"] = str(root / f"{name}.yaml")
    (root / "bad_yaml.yaml").write_text("dataset: [unclosed\nversion: v1\n")
    out["cfg:bad_yaml"] = str(root / "bad_yaml.yaml")
    return out


def fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("argv, culprit", [(a, c) for _, a, c in MISTAKES], ids=[i for i, _, _ in MISTAKES])
def test_a_mistake_is_one_line_naming_the_culprit_and_exit_2(
        argv: list[str], culprit: list[str], places: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main([fill(a, places) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xmodal"), lines[0]
    for word in culprit:
        assert fill(word, places) in lines[0], (word, lines[0])


@pytest.mark.parametrize("argv", [["sample", "--out", "{tmp}/w", "--faults", "1.5"], ["check", "{world}", "--out", "x"],
                                  ["run", "{cfg:data_juicer_entry}"]], ids=["faults", "check_dir", "config_entry"])
def test_the_installed_command_line_prints_no_traceback(argv: list[str], places: dict[str, str]) -> None:
    """The same through a new process, as a user's shell runs it (nothing caught by the test)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *[fill(a, places) for a in argv]],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_every_mistake_of_the_issue_is_in_the_table() -> None:
    ids = {i for i, _, _ in MISTAKES}
    assert {"check_dir", "check_release_manifest", "stage_input_dir", "stage_input_release_manifest",
            "lint_release_manifest", "sample_negative_n", "sample_faults_over_one", "config_key_typo",
            "config_stage_typo", "config_param_typo", "config_data_juicer_entry", "stage_typo",
            "set_param_typo"} <= ids
