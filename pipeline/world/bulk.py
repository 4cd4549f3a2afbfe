"""A bulk sample world for scale runs: N records that reuse the media of a K-record world.

``generate_bulk_world(out, n=1_000_000, media_pool=200)`` renders a normal sample world of
``media_pool`` records (media, faults and all), then writes ``n`` records: copy ``c`` of base
record ``r`` is record ``r`` with the id ``<r's id>_<c>`` (copy 0 keeps the base id), pointing at
the same media files. Injected faults are copied with their records, so about ``fault_rate`` of
the N records are faulty, each listed in ``faults.tsv`` with its expected code. Only text is
written per record (the id replaced in the base line), so a million records take seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.world import FAULTS_NAME, MANIFEST_NAME, SUMMARY_NAME, WorldSummary, generate_world


def copy_id(base_id: str, copy: int) -> str:
    return base_id if copy == 0 else f"{base_id}_{copy}"


def generate_bulk_world(out_dir: Path, n: int, media_pool: int, fault_rate: float = 0.1,
                        seed: int = 0) -> WorldSummary:
    """Write ``n`` records reusing a ``media_pool``-record world's media (module docstring)."""
    if media_pool < 1:
        raise ValueError(f"media_pool must be at least 1, got {media_pool}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out_dir = Path(out_dir)
    base = generate_world(out_dir, n=min(n, media_pool), fault_rate=fault_rate, seed=seed)
    lines = (out_dir / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    fault_rows = (out_dir / FAULTS_NAME).read_text(encoding="utf-8").splitlines()[1:]
    ids = [_line_id(line, i) for i, line in enumerate(lines)]
    faults = {row.split("\t", 1)[0]: row.split("\t", 1)[1] for row in fault_rows}
    copies = -(-n // len(lines))
    tmp = out_dir / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as manifest, open(out_dir / FAULTS_NAME, "w", encoding="utf-8") as tsv:
        tsv.write("id\tfault\texpected_code\n")
        written = 0
        for c in range(copies):
            for line, rid in zip(lines, ids, strict=True):
                if written == n:
                    break
                new = copy_id(rid, c) if rid is not None else None
                if c and rid is not None:
                    line = line.replace(_id_text(rid), _id_text(new or rid), 1)
                manifest.write(line + "\n")
                if rid is not None and rid in faults:
                    tsv.write(f"{new}\t{faults[rid]}\n")
                written += 1
    tmp.replace(out_dir / MANIFEST_NAME)
    counts: dict[str, int] = {}
    for kind, k in base.counts_by_kind.items():
        counts[kind] = k * (n // len(lines)) + sum(1 for i in range(n % len(lines)) if _kind_of(lines[i]) == kind)
    by_code: dict[str, int] = {}
    with open(out_dir / FAULTS_NAME, encoding="utf-8") as tsv:
        next(tsv)
        for row in tsv:
            code = row.rstrip("\n").rsplit("\t", 1)[-1]
            by_code[code] = by_code.get(code, 0) + 1
    summary = WorldSummary(out_dir=out_dir, n=n, seed=seed, fault_rate=fault_rate, counts_by_kind=counts,
                           faults_by_code=dict(sorted(by_code.items())), faults_by_name={})
    payload = {**summary.to_json(), "media_pool": len(lines)}
    (out_dir / SUMMARY_NAME).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _id_text(rid: str) -> str:
    return '"id": ' + json.dumps(rid, ensure_ascii=False)


def _line_id(line: str, index: int) -> str | None:
    """The id of a base line, also of one the world truncated (a line fault): its id comes first."""
    try:
        value = json.loads(line).get("id")
        return value if isinstance(value, str) else None
    except ValueError:
        start = line.find('"id": "')
        if start < 0:
            return None
        end = line.find('"', start + 7)
        return line[start + 7:end] if end > 0 else None


def _kind_of(line: str) -> str | None:
    try:
        return json.loads(line).get("kind")
    except ValueError:
        return None
