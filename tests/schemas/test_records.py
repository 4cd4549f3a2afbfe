from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.records import RECORD_FIELDS, Record, record_json_schema


def test_arrow_fields_match_the_pydantic_model() -> None:
    assert [f.name for f in RECORD_FIELDS] == list(Record.model_fields)


def test_json_schema_exports_every_field_and_the_id_pattern() -> None:
    schema = record_json_schema()
    assert set(schema["properties"]) == set(Record.model_fields)
    assert schema["properties"]["id"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    assert set(schema["required"]) >= {"id", "kind", "content", "source", "license"}
    json.dumps(schema)  # serialisable


def test_clean_examples_validate(examples_dir: Path) -> None:
    for name in ("objects.jsonl", "segments.jsonl", "documents.jsonl"):
        for line in (examples_dir / name).read_text().splitlines():
            obj = json.loads(line)
            if obj["id"] == "obj-schema":
                with pytest.raises(ValidationError, match="content"):
                    Record.model_validate(obj)
            else:
                Record.model_validate(obj)


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"id": "has space"}, "id"),
        ({"kind": "picture"}, "kind"),
        ({"media": [{"modality": "image", "uri": "a.png", "sha256": "xyz"}]}, "media.0.sha256"),
        ({"subtitles": [{"start_us": 1.5, "duration_us": 1, "text": "a"}]}, "subtitles.0.start_us"),
        ({"boxes": [{"label": "a", "bbox": [1, 2, 3], "format": "coco"}]}, "boxes.0.bbox"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_errors_name_the_field(patch: dict[str, object], field: str) -> None:
    base = {"id": "a", "kind": "text", "content": "x", "source": "s", "license": "l"}
    with pytest.raises(ValidationError) as err:
        Record.model_validate({**base, **patch})
    locs = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert field in locs


@pytest.mark.parametrize("fps", [5e-324, 0.001, 1e6, 0.0, -1.0])
def test_a_frame_rate_no_video_has_is_a_schema_error_naming_fps(fps: float) -> None:
    from schemas.records import MediaRef

    with pytest.raises(ValidationError, match="fps"):
        MediaRef(modality="video", uri="v.mp4", fps=fps)
    assert MediaRef(modality="video", uri="v.mp4", fps=25.0).fps == 25.0
