"""LLaVA, WebDataset (written by `webdataset`), video + SRT/WebVTT (written by pysrt and
webvtt-py, video with an audio track written by PyAV) and MMC4/OBELICS imports: records field
by field, reject lines, `xmodal check`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.interchange.commands import run_import
from pipeline.interchange.llava import conversation_turns
from pipeline.interchange.subtitles import SubtitleError, parse_srt, parse_vtt
from pipeline.interchange.video import group_cues
from tests.interchange.helpers import check, manifest_lines, write_image

SPAN = "<|image_start|><|image_pad|><|image_end|>"


def test_llava_conversations_round_trip(tmp_path: Path) -> None:
    write_image(tmp_path / "coco" / "000000033471.jpg")
    convs = [
        {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
            {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
        {"id": "text-only", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]},
        {"id": "no-image-file", "image": "nope.jpg", "conversations": [{"from": "human", "value": "<image>\nx"}]},
        {"id": "bad-role", "conversations": [{"from": "robot", "value": "x"}]},
        {"id": "two-tokens", "image": "000000033471.jpg",
         "conversations": [{"from": "human", "value": "<image><image>"}]},
    ]
    src = tmp_path / "llava.json"
    src.write_text(json.dumps(convs))
    out = tmp_path / "manifest.jsonl"
    run_import("llava", [str(src)], str(out), images=str(tmp_path / "coco"), license="CC-BY-4.0")
    got = {x["id"]: x for x in manifest_lines(out)}
    first = got["llava-000000033471"]
    assert first == {
        "id": "llava-000000033471", "kind": "object",
        "content": (f"USER: What are the colors of the bus in the image?\n{SPAN}\n"
                    "ASSISTANT: The bus in the image is white and red.\n"
                    "USER: What feature can be seen on the back of the bus?\n"
                    "ASSISTANT: The back of the bus features an advertisement."),
        "media": [{"modality": "image", "uri": "coco/000000033471.jpg"}],
        "source": "llava:llava.json[0] (id '000000033471')", "license": "CC-BY-4.0"}
    assert conversation_turns(first["content"]) == convs[0]["conversations"]
    assert got["llava-text-only"]["kind"] == "text" and got["llava-text-only"]["media"] == []
    assert got["llava-no-image-file"]["import_reject"]["code"] == "ERR_CROSS_MDL_MEDIA"
    assert "conversations[0].from is 'robot'" in got["llava-bad-role"]["import_reject"]["detail"]
    assert "2 <image> token(s) for 1 image(s)" in got["llava-two-tokens"]["import_reject"]["detail"]
    results = check(out, tmp_path / "check")
    assert {k for k, r in results.items() if r["status"] == "ok"} == {"llava-000000033471", "llava-text-only"}


def test_webdataset_tars_written_by_webdataset(tmp_path: Path) -> None:
    import cv2
    import webdataset as wds

    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    png = write_image(tmp_path / "a.png").read_bytes()
    ok, jpg = cv2.imencode(".jpg", np.full((32, 48, 3), 200, np.uint8))
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "000000000", "png": png, "txt": "a grey square",
                    "json": json.dumps({"url": "https://example.org/a.png", "license": "CC0-1.0",
                                        "width": 160, "height": 120, "status": "success"}).encode()})
        sink.write({"__key__": "000000001", "jpg": jpg.tobytes(), "json": json.dumps({"caption": "a pale photo"})})
        sink.write({"__key__": "000000002", "txt": "no image here", "json": json.dumps({"status": "success"})})
        sink.write({"__key__": "000000003", "json": json.dumps({"status": "failed_to_download",
                                                               "error_message": "HTTP 404"})})
    out = tmp_path / "out" / "manifest.jsonl"
    run_import("webdataset", [str(shard.parent)], str(out), license="CC-BY-4.0", source="laion-test")
    got = {x["id"]: x for x in manifest_lines(out)}
    assert got["wds-00000-000000000"] == {
        "id": "wds-00000-000000000", "kind": "object", "content": f"{SPAN} a grey square",
        "media": [{"modality": "image", "uri": "media/webdataset/00000/000000000.png", "width": 160, "height": 120}],
        "source": "https://example.org/a.png", "license": "CC0-1.0"}
    assert (out.parent / "media/webdataset/00000/000000000.png").read_bytes() == png
    second = got["wds-00000-000000001"]
    assert second["content"] == f"{SPAN} a pale photo" and second["source"] == "laion-test"
    assert second["license"] == "CC-BY-4.0"
    assert "no image member" in got["wds-00000-000000002"]["import_reject"]["detail"]
    assert "status 'failed_to_download': HTTP 404" in got["wds-00000-000000003"]["import_reject"]["detail"]
    results = check(out, tmp_path / "check")
    assert [k for k, r in sorted(results.items()) if r["status"] == "ok"] == ["wds-00000-000000000",
                                                                             "wds-00000-000000001"]


def _video_with_audio(path: Path, seconds: int = 4, fps: int = 10, rate: int = 16000) -> None:
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 7) % 255, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        t = np.arange(seconds * rate) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)
        for k in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                out.mux(packet)


def test_subtitle_readers_agree_with_pysrt_and_webvtt(tmp_path: Path) -> None:
    import pysrt
    import webvtt

    subs = pysrt.SubRipFile()
    subs.append(pysrt.SubRipItem(1, start=pysrt.SubRipTime(0, 0, 0, 500), end=pysrt.SubRipTime(0, 0, 1, 750),
                                 text="<i>Hello</i> there"))
    subs.append(pysrt.SubRipItem(2, start=pysrt.SubRipTime(0, 0, 2, 0), end=pysrt.SubRipTime(1, 0, 3, 1),
                                 text="two\nlines"))
    subs.save(str(tmp_path / "a.srt"), encoding="utf-8")
    cues = parse_srt((tmp_path / "a.srt").read_text())
    assert [(c.start_us, c.duration_us, c.text) for c in cues] == [
        (500_000, 1_250_000, "Hello there"), (2_000_000, 3_601_001_000, "two lines")]  # ends at 1:00:03.001
    vtt = webvtt.WebVTT()
    vtt.captions.append(webvtt.Caption("00:00:00.250", "00:00:01.000", "<v Roger>first"))
    vtt.captions.append(webvtt.Caption("00:01:02.000", "00:01:03.500", "second"))
    vtt.save(str(tmp_path / "a.vtt"))
    cues = parse_vtt((tmp_path / "a.vtt").read_text())
    reference = webvtt.read(str(tmp_path / "a.vtt"))
    assert [(c.start_us, c.end_us) for c in cues] == [
        (c.start_time.in_milliseconds() * 1000, c.end_time.in_milliseconds() * 1000) for c in reference]
    assert [c.text for c in cues] == ["first", "second"]
    with pytest.raises(SubtitleError, match=r"b.srt:2: not a timing line"):
        parse_srt("1\n00:00:01.000 -> 00:00:02,000\nhi\n", "b.srt")
    with pytest.raises(SubtitleError, match=r"b.srt:2: the cue ends at or before it starts"):
        parse_srt("1\n00:00:03,000 --> 00:00:02,000\nhi\n", "b.srt")
    with pytest.raises(SubtitleError, match="starts with 'WEBVTT'"):
        parse_vtt("00:00.000 --> 00:01.000\nhi\n", "c.vtt")


def test_cues_are_grouped_into_windows_that_cover_the_video() -> None:
    from pipeline.interchange.subtitles import Cue

    cues = [Cue(s * 1_000_000, 2_000_000, f"c{s}") for s in (1, 10, 25, 31, 50)]
    windows = group_cues(cues, 70_000_000, 30_000_000)
    assert [(s, e, [c.text for c in w]) for s, e, w in windows] == [
        (0, 31_000_000, ["c1", "c10", "c25"]), (31_000_000, 70_000_000, ["c31", "c50"])]


def test_video_with_subtitles_to_segments(tmp_path: Path) -> None:
    import pysrt

    videos = tmp_path / "videos"
    videos.mkdir()
    _video_with_audio(videos / "talk.mp4")
    subs = pysrt.SubRipFile([pysrt.SubRipItem(1, start=pysrt.SubRipTime(0, 0, 0, 200),
                                              end=pysrt.SubRipTime(0, 0, 1, 400), text="the tone starts"),
                             pysrt.SubRipItem(2, start=pysrt.SubRipTime(0, 0, 2, 100),
                                              end=pysrt.SubRipTime(0, 0, 3, 300), text="and again")])
    subs.save(str(videos / "talk.srt"), encoding="utf-8")
    _video_with_audio(videos / "broken.mp4", seconds=1)
    (videos / "broken.srt").write_text("1\n00:00:00,000 --> 00:00:0x,500\nhi\n")
    _video_with_audio(videos / "silent-subs.mp4", seconds=1)  # no subtitle file at all
    out = videos / "manifest.jsonl"
    run_import("video", [str(videos / n) for n in ("talk.mp4", "broken.mp4", "silent-subs.mp4")], str(out),
               license="CC-BY-4.0", source="talks", segment_seconds=2.0)
    got = {x["id"]: x for x in manifest_lines(out)}
    first, second = got["video-talk-0000"], got["video-talk-0001"]
    video_ref, audio_ref = first["media"]
    assert video_ref["uri"] == "talk.mp4" and video_ref["fps"] == 10.0 and video_ref["duration_us"] == 4_000_000
    assert audio_ref["uri"] == "media/video/video-talk.wav" and audio_ref["sample_rate"] == 16000
    assert abs(audio_ref["duration_us"] - 4_000_000) < 100_000  # the AAC encoder pads a frame or so
    assert first["content"] == ("<|video_start|><|video_pad|><|video_end|><|audio_start|><|audio_pad|>"
                                "<|audio_end|> the tone starts")
    assert (first["start_us"], first["duration_us"]) == (0, 2_100_000)
    assert first["subtitles"] == [{"start_us": 200_000, "duration_us": 1_200_000, "text": "the tone starts"}]
    assert (second["start_us"], second["duration_us"]) == (2_100_000, 1_900_000)
    assert second["subtitles"] == [{"start_us": 2_100_000, "duration_us": 1_200_000, "text": "and again"}]
    assert "broken.srt:2: not a timing line" in got["video-broken"]["import_reject"]["detail"]
    assert "no subtitles" in got["video-silent-subs"]["import_reject"]["detail"]
    results = check(out, tmp_path / "check", stages="placeholder_lint,media_check")
    assert results["video-talk-0000"]["status"] == "ok" and results["video-talk-0001"]["status"] == "ok"
    assert results["video-broken"]["reject_code"] == "ERR_CROSS_MDL_SCHEMA"


def test_mmc4_and_obelics_documents(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_image(images / "a1.jpg")
    write_image(images / "b2.png")
    mmc4 = tmp_path / "docs_shard_0.jsonl"
    mmc4.write_text("\n".join(json.dumps(d) for d in [
        {"url": "https://example.org/post", "text_list": ["First sentence.", "Second one.", "Third."],
         "image_info": [{"image_name": "b2.png", "raw_url": "https://x/b2.png", "matched_text_index": 2,
                         "matched_sim": 0.3}, {"image_name": "a1.jpg", "raw_url": "https://x/a1.jpg",
                                               "matched_text_index": 0, "matched_sim": 0.25}]},
        {"url": "u", "text_list": ["x"], "image_info": [{"image_name": "a1.jpg", "matched_text_index": 5}]},
        {"url": "u", "text_list": ["x"], "image_info": [{"image_name": "gone.jpg", "matched_text_index": 0}]},
    ]) + "\n")
    out = tmp_path / "mmc4.jsonl"
    run_import("mmc4", [str(mmc4)], str(out), images=str(images), license="ODC-BY-1.0")
    got = {x["id"]: x for x in manifest_lines(out)}
    doc = got["mmc4-docs_shard_0-0"]
    assert doc == {
        "id": "mmc4-docs_shard_0-0", "kind": "document", "content": "", "source": "https://example.org/post",
        "license": "ODC-BY-1.0",
        "items": [{"type": "text", "text": "First sentence.", "page": 1},
                  {"type": "image", "media_index": 0, "page": 1},
                  {"type": "text", "text": "Second one.", "page": 1}, {"type": "text", "text": "Third.", "page": 1},
                  {"type": "image", "media_index": 1, "page": 1}],
        "media": [{"modality": "image", "uri": "images/a1.jpg"}, {"modality": "image", "uri": "images/b2.png"}]}
    assert "matched_text_index 5 is outside text_list" in got["mmc4-docs_shard_0-1"]["import_reject"]["detail"]
    assert got["mmc4-docs_shard_0-2"]["import_reject"]["code"] == "ERR_CROSS_MDL_MEDIA"
    assert {k for k, r in check(out, tmp_path / "c1").items() if r["status"] == "ok"} == {"mmc4-docs_shard_0-0"}

    obelics = tmp_path / "obelics.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"texts": ["Intro text.", None, "After the image."], "images": [None, "https://cdn.x/b2.png", None],
         "general_metadata": json.dumps({"url": "https://example.org/page"})},
        {"texts": ["a", "b"], "images": [None, "c"], "general_metadata": "{}"},
    ]), obelics)
    out = tmp_path / "obelics.jsonl"
    run_import("obelics", [str(obelics)], str(out), images=str(images), license="CC-BY-4.0")
    got = {x["id"]: x for x in manifest_lines(out)}
    doc = got["obelics-obelics-0"]
    assert doc["items"] == [{"type": "text", "text": "Intro text.", "page": 1},
                            {"type": "image", "media_index": 0, "page": 1},
                            {"type": "text", "text": "After the image.", "page": 1}]
    assert doc["media"] == [{"modality": "image", "uri": "images/b2.png"}] and doc["source"] == "https://example.org/page"
    assert "position 1 has both text and image" in got["obelics-obelics-1"]["import_reject"]["detail"]
    assert check(out, tmp_path / "c2")["obelics-obelics-0"]["status"] == "ok"
