"""Quality gates: thresholds against metrics, readable failures, and a failing gate stopping a
real run (in-process stages on the example records) while its report is still written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.build import run_config
from pipeline.cli import main
from pipeline.release.gates import GateError, evaluate_gates, failed, failure_message
from pipeline.run.config import ConfigError, GatesConfig, parse_config
from schemas.reason_codes import ReasonCode

METRICS = {
    "retrieval": {"image_to_text": {"r@1": 0.62, "r@5": 0.9}, "text_to_image": {"r@1": 0.48, "r@5": 0.85}},
    "hallucination": {"chair_i": 0.02, "chair_s": 0.08},
    "rejects": {"total_rate": 0.1, "rate_by_code": {"ERR_CROSS_MDL_MEDIA": 0.04}},
    "counts": {"kept": 90},
}


def test_minimum_and_maximum_with_margins() -> None:
    results = evaluate_gates(GatesConfig(r_at_1_min=0.5, chair_s_max=0.05, kept_min=10), METRICS)
    by = {(r.gate, r.metric): r for r in results}
    i2t, t2i = by[("r_at_1_min", "image->text R@1")], by[("r_at_1_min", "text->image R@1")]
    assert i2t.passed and i2t.margin == pytest.approx(0.12)
    assert not t2i.passed and t2i.margin == pytest.approx(-0.02)
    assert "text->image R@1 = 0.48, below the minimum 0.5 by 0.02" in t2i.detail
    chair = by[("chair_s_max", "CHAIR-s")]
    assert not chair.passed and "above the maximum 0.05 by 0.03" in chair.detail
    assert by[("kept_min", "kept records")].passed
    assert [r.gate for r in failed(results)] == ["r_at_1_min", "chair_s_max"]


def test_reject_rate_per_code_and_a_code_that_rejected_nothing() -> None:
    gates = GatesConfig(reject_rate_max={ReasonCode.MEDIA: 0.01, ReasonCode.FUSION: 0.0})
    results = evaluate_gates(gates, METRICS)
    assert [(r.gate, r.passed) for r in results] == [
        ("reject_rate_max.ERR_CROSS_MDL_MEDIA", False), ("reject_rate_max.ERR_CROSS_MDL_FUSION", True)]


def test_a_gate_on_an_unmeasured_metric_fails_unless_told_to_skip() -> None:
    why = {"false_negative_rate": "no stage checked the negatives"}
    strict = evaluate_gates(GatesConfig(false_negative_rate_max=0.1), METRICS, why)
    assert not strict[0].passed and "not measured (no stage checked the negatives)" in strict[0].detail
    lenient = evaluate_gates(GatesConfig(false_negative_rate_max=0.1, on_missing="skip"), METRICS, why)
    assert lenient[0].passed and lenient[0].skipped


def test_false_negative_gate_also_holds_for_the_worst_batch() -> None:
    metrics = {"negatives": {"false_negative_rate": 0.05, "false_negative_rate_worst_batch": 0.3}}
    results = evaluate_gates(GatesConfig(false_negative_rate_max=0.1), metrics)
    assert [(r.metric, r.passed) for r in results] == [
        ("false-negative rate", True), ("false-negative rate, worst batch", False)]


def test_failure_message_lists_every_failing_gate_and_the_report() -> None:
    results = evaluate_gates(GatesConfig(r_at_5_min=0.99, chair_i_max=0.5), METRICS)
    message = failure_message(results, "out/ds/_failed/v1/report/index.html")
    lines = message.splitlines()
    assert lines[0] == "2 of 3 quality gate(s) failed; the release was not published:"
    assert lines[1].strip().startswith("r_at_5_min FAILED: image->text R@5 = 0.9, below the minimum 0.99 by 0.09")
    assert lines[-1] == "report: out/ds/_failed/v1/report/index.html"


def test_gate_config_errors_name_the_key() -> None:
    base = {"dataset": "d", "version": "v", "inputs": ["x"]}
    with pytest.raises(ConfigError, match=r"gates\.chair_s_max: Input should be less than or equal to 1"):
        parse_config({**base, "gates": {"chair_s_max": 3}})
    with pytest.raises(ConfigError, match=r"gates\.r_at_2_min: Extra inputs are not permitted"):
        parse_config({**base, "gates": {"r_at_2_min": 0.5}})
    with pytest.raises(ConfigError, match=r"gates\.reject_rate_max\.ERR_NOPE"):
        parse_config({**base, "gates": {"reject_rate_max": {"ERR_NOPE": 0.1}}})


# ---- a real run ---------------------------------------------------------------------------
def write_config(tmp_path: Path, examples_dir: Path, gates: dict) -> Path:
    cfg = {
        "dataset": "ex", "version": "v1", "inputs": [str(examples_dir / "objects.jsonl")],
        "stages": ["placeholder_lint", "media_check", "object_boxes", "object_hallucination"],
        "release": {"output": str(tmp_path / "rel")}, "gates": gates,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_an_impossible_gate_stops_the_run_with_a_readable_message(
        tmp_path: Path, examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, examples_dir, {"kept_min": 1_000_000, "chair_s_max": 0.5, "r_at_1_min": 0.9})
    code = main(["run", str(config), "--local"])
    err = capsys.readouterr().err
    assert code == 2
    # r_at_1_min is checked both ways: 4 results, 3 failing
    assert "xmodal run: error: 3 of 4 quality gate(s) failed; the release was not published:" in err
    assert re.search(r"kept_min FAILED: kept records = (\d+), below the minimum 1000000 by (\d+)", err)
    assert "r_at_1_min FAILED: image->text R@1 was not measured (no image and text embedding columns" in err
    dataset = tmp_path / "rel" / "ex"
    assert not (dataset / "v1").exists() and not (dataset / "latest").exists()  # nothing published
    report = dataset / "_failed" / "v1" / "report" / "index.html"
    assert f"report: {report}" in err
    page = report.read_text()
    assert "3 quality gate(s) failed: this version was not published" in page
    gates = json.loads((dataset / "_failed" / "v1" / "gates.json").read_text())
    assert [(g["gate"], g["passed"]) for g in gates] == [
        ("r_at_1_min", False), ("r_at_1_min", False), ("chair_s_max", True), ("kept_min", False)]


def test_passing_gates_publish_and_are_in_the_manifest(tmp_path: Path, examples_dir: Path) -> None:
    config = write_config(tmp_path, examples_dir, {"kept_min": 1, "chair_s_max": 0.5,
                                                   "reject_rate_max": {"ERR_CROSS_MDL_MEDIA": 0.5}})
    from pipeline.run.config import load_config

    cfg = load_config(config)
    with pytest.raises(GateError):  # first a failing build leaves a failed report ...
        run_config(cfg.model_copy(update={"gates": GatesConfig(kept_min=99)}), local=True)
    assert (tmp_path / "rel" / "ex" / "_failed" / "v1").is_dir()
    result = run_config(cfg, local=True)  # ... which the passing build of that version removes
    assert not (tmp_path / "rel" / "ex" / "_failed" / "v1").exists()
    manifest = json.loads((Path(result.uri) / "manifest.json").read_text())
    assert [(g["gate"], g["passed"]) for g in manifest["gates"]] == [
        ("chair_s_max", True), ("kept_min", True), ("reject_rate_max.ERR_CROSS_MDL_MEDIA", True)]
    assert manifest["metrics"]["hallucination"]["chair_s"] == 0.0
    assert "retrieval" in manifest["metrics"]["skipped"]
