"""LLaVA-style conversation JSON -> records, and back.

``xmodal import llava llava_instruct.json --images coco/train2017/ --out m.jsonl`` reads a JSON
list (or JSONL) of ``{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"system",
"value"}]}``. A conversation with an image becomes an ``object`` record (no boxes), one without
a ``text`` record. The content holds one turn a line, ``USER: ...`` / ``ASSISTANT: ...`` /
``SYSTEM: ...``, with the ``<image>`` token replaced by the image span (put before the first
turn when the conversation has none); :func:`conversation_turns` reads the turns back, which
is what ``xmodal export llava`` writes.

Rejected: a missing image (MEDIA); no turns, an unknown ``from``, a value that is not a string,
more than one ``<image>`` token for one image (SCHEMA, naming the entry and turn).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.interchange.manifest import (
    IMAGE_SPAN,
    ImportProblem,
    ManifestWriter,
    existing_file,
    record_id,
    schema_problem,
)

ROLES: dict[str, str] = {"human": "USER", "gpt": "ASSISTANT", "system": "SYSTEM"}
_ROLE_OF_PREFIX = {prefix: role for role, prefix in ROLES.items()}
_TURN_RE = re.compile(r"^(USER|ASSISTANT|SYSTEM): ", re.MULTILINE)
IMAGE_TOKEN = "<image>"


def render_turns(turns: list[dict[str, Any]], where: str, has_image: bool) -> str:
    lines, images = [], 0
    for k, turn in enumerate(turns):
        role, value = turn.get("from"), turn.get("value")
        if role not in ROLES:
            raise schema_problem(f"{where}: conversations[{k}].from is {role!r}, not one of {sorted(ROLES)}")
        if not isinstance(value, str):
            raise schema_problem(f"{where}: conversations[{k}].value is not a string")
        images += value.count(IMAGE_TOKEN)
        if _TURN_RE.search(value):
            # A line inside a turn that starts like a turn would split it when read back.
            value = _TURN_RE.sub(lambda m: m.group(0).lower(), value)
        lines.append(f"{ROLES[role]}: {value.replace(IMAGE_TOKEN, IMAGE_SPAN).strip()}")
    if not lines:
        raise schema_problem(f"{where}: conversations is empty")
    if images > 1 or (images and not has_image):
        raise schema_problem(f"{where}: {images} {IMAGE_TOKEN} token(s) for {int(has_image)} image(s)")
    text = "\n".join(lines)
    return f"{IMAGE_SPAN}\n{text}" if has_image and not images else text


def conversation_turns(content: str) -> list[dict[str, str]] | None:
    """The turns of a content written by :func:`render_turns` (spans back to ``<image>``), or
    None when the content is not a conversation."""
    content = content.replace(IMAGE_SPAN + "\n", IMAGE_TOKEN + "\n", 1) if content.startswith(IMAGE_SPAN + "\n") \
        else content
    starts = list(_TURN_RE.finditer(content))
    if not starts or content[:starts[0].start()].strip() not in ("", IMAGE_TOKEN):
        return None
    lead = content[:starts[0].start()].strip()
    turns = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(content)
        value = content[m.end():end].rstrip("\n").replace(IMAGE_SPAN, IMAGE_TOKEN)
        turns.append({"from": _ROLE_OF_PREFIX[m.group(1)], "value": value})
    if lead and turns:
        turns[0]["value"] = f"{IMAGE_TOKEN}\n{turns[0]['value']}"
    return turns


def _entries(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: neither a JSON list nor JSON lines: {err}") from None
    if not isinstance(doc, list):
        raise UserError(f"{path}: a LLaVA file is a JSON list of conversations")
    return doc


def import_llava(files: list[Path], writer: ManifestWriter, images_dir: Path | None = None) -> None:
    for path in files:
        base = images_dir or path.parent
        for k, entry in enumerate(_entries(path)):
            entry = entry if isinstance(entry, dict) else {}
            rid = record_id("llava", entry.get("id", f"{path.stem}-{k}"))
            where = f"{path.name}[{k}] (id {entry.get('id')!r})"
            kind = "object" if entry.get("image") else "text"
            try:
                if not isinstance(entry.get("conversations"), list):
                    raise schema_problem(f"{where}: conversations is not a list")
                content = render_turns(entry["conversations"], where, bool(entry.get("image")))
                media = []
                if entry.get("image"):
                    image = existing_file(base, entry["image"], f"{where}: image")
                    media.append({"modality": "image", "uri": writer.media_path(image)})
                source, licence = writer.provenance(entry.get("source"), entry.get("license"), where)
                writer.add({"id": rid, "kind": kind, "content": content, "media": media,
                            "source": source, "license": licence})
            except ImportProblem as problem:
                writer.reject_problem(rid, kind, problem)
