"""examples/train_tiny_clip.py end to end on a small release: both variants train from the
release through the checked loader and report R@1 on held-out pairs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_tiny_clip.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_tiny_clip", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling for DataLoader workers) look it up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_trains_both_variants_and_reports_recall(
    release_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert load_script().main(["--release", release_uri, "--tiny", "--threads", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    manifest = json.loads((Path(release_uri) / "manifest.json").read_text())
    object_rows = sum(s["rows"] for s in manifest["shards"] if s["kind"] == "object" and s["format"] == "parquet")
    assert object_rows >= 20 and results["train_pairs"] + results["heldout_pairs"] == object_rows
    assert results["heldout_pairs"] == 6 and results["skipped"] == {"placeholder": 0, "media": 0}
    assert set(results["variants"]) == {"baseline", "mixup"}
    for facts in results["variants"].values():
        assert facts["steps"] == 2 * (results["train_pairs"] // 8)
        assert 0.0 <= facts["r1_image_to_text"] <= 1.0 and 0.0 <= facts["r1_text_to_image"] <= 1.0
    printed = capsys.readouterr().out
    assert "R@1 i->t" in printed and "mixup" in printed and "chance" in printed
