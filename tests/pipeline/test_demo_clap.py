"""The demo CLAP: `xmodal train-demo-clap` writes a checkpoint that loads and a card with its
facts, and the shipped checkpoint, through decode_media + clap_score on a world it never saw,
scores clips' own subtitles above its card's threshold far more often than other clips'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from access.models import file_sha256, load_clap
from pipeline.cli import main
from pipeline.run.local_runner import read_inputs, run_stages
from pipeline.world import generate_world
from stages.clap_score import ClapScore
from stages.decode_media import DecodeMedia

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "demo-clap"
CARD_FIELDS = {"seed", "steps", "batch", "hardware", "train_seconds", "weights_sha256",
               "test_r1_audio_to_text", "test_r1_text_to_audio", "recommended_min_score",
               "recommended_clap_score_params", "test_clean_pairs_below_threshold", "mismatched",
               "reproduce", "input"}


@pytest.mark.slow
def test_a_few_steps_write_a_checkpoint_that_loads_and_its_card(tmp_path: Path) -> None:
    out = tmp_path / "clap"
    assert main(["train-demo-clap", "--out", str(out), "--steps", "3", "--batch", "8",
                 "--eval-clips", "24"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert CARD_FIELDS <= set(card)
    assert card["steps"] == 3 and card["test_clips"] == 24
    assert card["weights_sha256"] == file_sha256(out / "model.safetensors")
    assert card["recommended_clap_score_params"]["min_score"] == card["recommended_min_score"]
    assert "--steps 3" in card["reproduce"][0] and "--eval-clips 24" in card["reproduce"][0]
    bundle = load_clap(out)
    assert bundle.sampling_rate == 16_000
    stage = ClapScore({"checkpoint": str(out), "checkpoint_sha256": card["weights_sha256"],
                       "device": "cpu"})
    stage.setup()
    emb, ok = stage.encode_texts(["the ball moves left with a 440 Hz tone"])
    assert ok.all() and emb.shape == (1, card["config"]["projection_dim"])


@pytest.mark.slow
def test_shipped_checkpoint_prefers_a_clips_own_subtitles(tmp_path: Path) -> None:
    card = json.loads((SHIPPED / "card.json").read_text())
    params = card["recommended_clap_score_params"]
    world = generate_world(tmp_path / "world", n=100, fault_rate=0.0, seed=77)
    rows = read_inputs([str(world.manifest_path)], 4 << 20)
    own = rows.filter(pc.fill_null(pc.equal(rows["kind"], "segment"), False))
    # The offset-by-one bug on the text side: each clip paired with its neighbour's subtitles.
    subtitles = own["subtitles"].to_pylist()
    other = own.set_column(own.schema.get_field_index("subtitles"), own.schema.field("subtitles"),
                           pa.array(subtitles[1:] + subtitles[:1], own.schema.field("subtitles").type))
    stages = [DecodeMedia({"images": False, "audio_sample_rate": 16_000, "max_audio_s": 8}),
              ClapScore({"checkpoint": str(SHIPPED), "checkpoint_sha256": card["weights_sha256"],
                         "segment_text": params["segment_text"], "device": "cpu"})]
    scores = {}
    for name, table in (("own", own), ("other", other)):
        out = run_stages(table, stages).table
        scores[name] = np.array(out["clap_score"].to_pylist(), dtype=np.float64)
        assert np.isfinite(scores[name]).all() and scores[name].size == own.num_rows >= 15
    own_above = float(np.mean(scores["own"] >= params["min_score"]))
    other_above = float(np.mean(scores["other"] >= params["min_score"]))
    assert own_above >= other_above + 0.25, (own_above, other_above)
    assert own_above >= 1 - 5 * card["test_clean_pairs_below_threshold"] - 0.1
    assert scores["own"].mean() > scores["other"].mean()
