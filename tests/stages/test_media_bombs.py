"""Media bombs (tests/stages/media_bombs.py) are refused from their headers, before a pixel or a
sample is allocated, by ``media_check`` and ``decode_media``, each with ``ERR_CROSS_MDL_MEDIA``
and the measured value; the worker's peak memory stays where it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from access.io import open_media
from access.media_limits import MediaLimits
from pipeline.run.ingest import read_manifest
from stages.decode_media import DecodeMedia, MediaDecodeError, open_image, sample_video_frames
from stages.media_check import MediaCheck
from tests.stages.media_bombs import make_bombs

MEDIA = "ERR_CROSS_MDL_MEDIA"
PROJECT = Path(__file__).resolve().parents[2]
# (bomb, what the detail must say: the measured value and the limit)
BOMBS = [
    ("rate", "audio sample rate is 2147483647 Hz, over the limit of 384000"),
    ("sparse", "audio is 33554.4 s long, over the limit of 14400 s"),
    ("pixels", "image is 16000x16000 = 256000000 pixels, over the limit of 50000000"),
]
IMAGE = "<|image_start|><|image_pad|><|image_end|> x"
AUDIO = "<|audio_start|><|audio_pad|><|audio_end|> x"


def record(rid: str, uri: str) -> dict:
    if uri.endswith(".png"):
        return {"id": rid, "kind": "object", "content": IMAGE, "media": [{"modality": "image", "uri": uri}],
                "source": "t", "license": "CC0-1.0"}
    return {"id": rid, "kind": "segment", "content": AUDIO, "media": [{"modality": "audio", "uri": uri}],
            "source": "t", "license": "CC0-1.0", "start_us": 0, "duration_us": 2_000_000}


def manifest(folder: Path, records: list[dict], name: str = "manifest.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def bomb_rows(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    folder = tmp_path_factory.mktemp("bombs")
    bombs = make_bombs(folder / "media")
    return read_manifest(str(manifest(folder, [record(k, f"media/{p.name}") for k, p in bombs.items()])))


def test_media_check_refuses_each_bomb_with_its_measured_value(bomb_rows: pa.Table) -> None:
    out = {r["id"]: r for r in MediaCheck()(bomb_rows).to_pylist()}
    for bomb, detail in BOMBS:
        assert (out[bomb]["reject_stage"], out[bomb]["reject_code"]) == ("media_check", MEDIA), bomb
        assert detail in out[bomb]["reject_detail"], (bomb, out[bomb]["reject_detail"])


def test_decode_media_refuses_each_bomb_with_its_measured_value(bomb_rows: pa.Table) -> None:
    out = {r["id"]: r for r in DecodeMedia({"images": False})(bomb_rows).to_pylist()}
    # decode_media reads at most 256 MiB a file: the sparse WAV is refused by its size first.
    decode_bombs = [BOMBS[0], ("sparse", "is 1073741824 bytes, over the limit of 268435456")]
    for bomb, detail in decode_bombs:
        assert (out[bomb]["reject_stage"], out[bomb]["reject_code"]) == ("decode_media", MEDIA), bomb
        assert detail in out[bomb]["reject_detail"], (bomb, out[bomb]["reject_detail"])
    pixels = next(r for r in bomb_rows.to_pylist() if r["id"] == "pixels")["media"][0]["uri"]
    with open_media(pixels, 1 << 30) as media, pytest.raises(ValueError, match=BOMBS[2][1]):
        open_image(media, pixels, MediaLimits())  # what decode_media's image path calls


MEASURE = """
import json, resource, sys
from access.io import open_media
from access.media_limits import MediaLimits
from pipeline.run.ingest import read_manifest
from stages.decode_media import DecodeMedia, open_image
from stages.media_check import MediaCheck

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def run(path, png):
    rows = read_manifest(path)
    codes = [r["reject_code"] for r in MediaCheck()(rows).to_pylist()]
    codes += [r["reject_code"] for r in DecodeMedia({"images": False})(rows).to_pylist()]
    with open_media(png, 1 << 30) as media:
        try:
            open_image(media, png, MediaLimits())
        except ValueError:
            codes.append("refused")
    return codes

run(sys.argv[1], sys.argv[2])  # the same code paths on small valid files: imports, caches
before = peak_mib()
codes = run(sys.argv[3], sys.argv[4])
print(json.dumps({"before_mib": before, "grew_mib": peak_mib() - before, "codes": codes}))
"""


def test_a_worker_stays_bounded_on_every_bomb(tmp_path: Path, examples_dir: Path) -> None:
    """In a process of its own: the peak resident memory (ru_maxrss) after the bombs is the
    peak after the same stages ran on small valid media, give or take a few MiB."""
    bombs = make_bombs(tmp_path / "media")
    shutil.copy(examples_dir / "media" / "seg-clean.wav", tmp_path / "media" / "ok.wav")
    shutil.copy(examples_dir / "media" / "obj-clean-1.png", tmp_path / "media" / "ok.png")
    warm = manifest(tmp_path, [record("ok-audio", "media/ok.wav"), record("ok-image", "media/ok.png")], "warm.jsonl")
    hot = manifest(tmp_path, [record(k, f"media/{p.name}") for k, p in bombs.items()], "bombs.jsonl")
    done = subprocess.run([sys.executable, "-c", MEASURE, str(warm), str(tmp_path / "media" / "ok.png"), str(hot),
                           str(bombs["pixels"])], capture_output=True, text=True, cwd=PROJECT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [MEDIA] * 3 + [MEDIA] * 2 + [None, "refused"]  # decode_media skips the image row
    assert result["grew_mib"] < 32, result


def test_every_limit_is_a_param_and_names_its_value(tmp_path: Path, examples_dir: Path) -> None:
    shutil.copytree(examples_dir / "media", tmp_path / "media")
    video = {"id": "video", "kind": "segment", "content": "<|video_start|><|video_pad|><|video_end|> x",
             "media": [{"modality": "video", "uri": "media/seg-clean.mp4"}], "source": "t", "license": "CC0-1.0",
             "start_us": 0, "duration_us": 1_000_000}
    rows = read_manifest(str(manifest(tmp_path, [record("audio", "media/seg-clean.wav"), video,
                                                 record("image", "media/obj-clean-1.png")])))
    frame = "video frame is 96x64 = 6144 pixels, over the limit of 1000"
    cases = [
        ({"max_media_bytes": 100_000}, {"audio": "is 960044 bytes, over the limit of 100000"}),
        ({"max_audio_sample_rate": 8000}, {"audio": "audio sample rate is 16000 Hz, over the limit of 8000"}),
        ({"max_audio_duration_s": 10}, {"audio": "audio is 30.0 s long, over the limit of 10 s"}),
        ({"max_video_frames": 100}, {"video": "video has 300 frames, over the limit of 100"}),
        ({"max_video_duration_s": 5}, {"video": "video is 30.0 s long, over the limit of 5 s"}),
        ({"max_image_pixels": 1000}, {"video": frame,
                                      "image": "image is 256x192 = 49152 pixels, over the limit of 1000"}),
    ]
    for params, refused in cases:
        out = {r["id"]: r for r in MediaCheck(params)(rows).to_pylist()}
        for rid, row in out.items():
            if rid in refused:
                assert row["reject_code"] == MEDIA and refused[rid] in row["reject_detail"], (params, row)
            else:
                assert row["status"] == "ok", (params, row)
    assert all(r["status"] == "ok" for r in MediaCheck()(rows).to_pylist())
    audio_only = DecodeMedia({"images": False, "max_audio_duration_s": 10})(rows).to_pylist()
    assert "audio is 30.0 s long, over the limit of 10 s" in audio_only[0]["reject_detail"]
    with pytest.raises(ValueError, match="video has 300 frames, over the limit of 100"):
        sample_video_frames(str(tmp_path / "media" / "seg-clean.mp4"), 10.0, 0, 1_000_000, 2,
                            MediaLimits(max_video_frames=100))
    assert not isinstance(MediaDecodeError("x"), MemoryError)
