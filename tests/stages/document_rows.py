"""Document rows for the document-level stage tests: sample-world documents (items shuffled out
of source order), hand-made documents whose figures are drawn like the sample world's, and
helpers that read spans back out of ``content``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.run.ingest import parse_manifest_bytes, read_manifest
from pipeline.world import generate_world
from pipeline.world.documents import Figure, render_figure
from pipeline.world.render import encode_png
from schemas.placeholders import PlaceholderLinter

SPAN_RE = re.compile(r"<\|(image|audio|video)_start\|>.*?<\|\1_end\|>")
FIG_URI_RE = re.compile(r"-fig-(\d+)\.png$")


def world_documents(out: Path, n: int = 100, seed: int = 5) -> pa.Table:
    """The documents of a clean sample world; their items are in source order, which in the
    sample world is the true reading order."""
    summary = generate_world(out, n=n, fault_rate=0.0, seed=seed)
    table = read_manifest(str(summary.manifest_path))
    return table.filter(pc.equal(table["kind"], "document"))


def shuffle_items(docs: pa.Table, seed: int = 0) -> pa.Table:
    """The same documents with each one's items in a seeded random order."""
    rng = np.random.default_rng(seed)
    rows = docs.to_pylist()
    for row in rows:
        row["items"] = [row["items"][i] for i in rng.permutation(len(row["items"]))]
    return pa.Table.from_pylist(rows, schema=docs.schema)


def write_figure(root: Path, name: str, colour: str, shape: str, size: str) -> dict[str, Any]:
    """Draw one sample-world style figure under ``root/media`` and return its media ref."""
    path = root / "media" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(render_figure(Figure(1, colour, shape, size))))
    return {"modality": "image", "uri": f"media/{name}.png", "width": 128, "height": 96}


def document_table(records: list[dict[str, Any]], root: Path) -> pa.Table:
    """Records -> ROW_SCHEMA rows through the real ingest (manifest_root = ``root``)."""
    common = {"kind": "document", "content": "", "source": "tests", "license": "CC0-1.0"}
    data = "".join(json.dumps({**common, **r}, ensure_ascii=False) + "\n" for r in records).encode()
    return parse_manifest_bytes(data, str(root / "manifest.jsonl"))


def lint(row: dict[str, Any]) -> str | None:
    """The linter's verdict on a row's content against its media refs (None = valid)."""
    refs = [(m["modality"], m["num_tokens"]) for m in row["media"] or []]
    verdict = PlaceholderLinter().check(row["content"], refs)
    return None if verdict is None else verdict.detail


def figure_numbers(row: dict[str, Any]) -> list[int]:
    """The figure number of each image ref of a sample-world row, in media order."""
    return [int(FIG_URI_RE.search(m["uri"]).group(1)) for m in row["media"]]  # type: ignore[union-attr]
