"""A bigger world made of the example records: each record repeated under new ids, media shared.

Used where a run must last long enough to be interrupted (a killed build, a killed worker node)
without depending on the sample-world generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def write_world(tmp: Path, examples_dir: Path, copies: int, files: tuple[str, ...]) -> Path:
    """``tmp/world.jsonl``: the records of ``files``, ``copies`` times (ids suffixed ``-cNN``),
    with the examples' media beside it; a line that is not a JSON object stays as it is."""
    shutil.copytree(examples_dir / "media", tmp / "media", dirs_exist_ok=True)
    lines = []
    for c in range(copies):
        for name in files:
            for line in (examples_dir / name).read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    lines.append(line)  # a broken line stays broken in every copy
                    continue
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    record["id"] = f"{record['id']}-c{c:02d}"
                lines.append(json.dumps(record, ensure_ascii=False))
    manifest = tmp / "world.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
