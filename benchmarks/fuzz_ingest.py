"""Fuzz at scale: N seeded mutations of sample-world records through ingest and ``xmodal check``.

The suite's fuzz test (``tests/pipeline/test_fuzz_ingest.py``) runs 2,000 per format on every
CI run; this runs N (default 100,000) as JSON lines and N as Parquet rows (with two damaged
row groups per manifest), in manifests of ``--chunk`` mutations each, through ``xmodal check``
in-process. For every manifest it counts the rows that came back exactly once (one per line,
kept or rejected with a reason code, an ingest reject's detail starting with its line) and a
crash: ``check`` raising or exiting non-zero, which loses the whole manifest.

Target (issue 15): rows out == rows in, 0 crashes.

Usage: ``python -m benchmarks.fuzz_ingest [--n 100000] [--chunk 5000] [--seed 0] [--quick]``.
Not picked up by ``make bench`` (the ``bench_`` prefix): at the default N it takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks._result import report
from pipeline.cli import main as xmodal
from pipeline.world import generate_world
from pipeline.world.mutations import mutate_records, mutated_parquet


def sample_pool(world: Path) -> list[dict[str, Any]]:
    """The world's records, but three of its eight segments: a kept segment is decoded by
    ``segment_checks``, which would otherwise be most of the run's time (as in the test)."""
    generate_world(world, n=40, fault_rate=0.0, seed=0)
    records = [json.loads(line) for line in (world / "manifest.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] != "segment"] + [r for r in records if r["kind"] == "segment"][:3]


def accounted(rows: list[dict[str, Any]], manifest: str, numbers: range) -> int:
    """How many of the manifest's lines came back exactly once, with a code where rejected."""
    seen = Counter(r["source_ref"] for r in rows)
    good = 0
    by_ref = {r["source_ref"]: r for r in rows}
    for i in numbers:
        ref = f"{manifest}:{i}"
        row = by_ref.get(ref)
        if seen[ref] != 1 or row is None:
            continue
        if row["status"] == "rejected" and not (row["reject_code"] and row["reject_detail"]):
            continue
        if row["reject_stage"] == "ingest" and not row["reject_detail"].startswith(ref + ": "):
            continue
        good += 1
    return good


def run_chunk(manifest: Path, out: Path, numbers: range, codes: Counter[str]) -> tuple[int, str | None]:
    """(rows out, the crash's last line or None) for one manifest through ``xmodal check``."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = xmodal(["check", str(manifest), "--out", str(out)])
    except BaseException:  # noqa: BLE001 -- any escape is the crash this counts
        return 0, traceback.format_exc().strip().splitlines()[-1]
    if rc != 0:
        return 0, f"exit {rc}"
    rows = pq.read_table(out / "results.parquet").to_pylist()
    codes.update(r["reject_code"] or "ok" for r in rows)
    return accounted(rows, str(manifest), numbers), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="mutations per format (default 100000)")
    parser.add_argument("--chunk", type=int, default=5_000, help="mutations per manifest (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 per format")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    n = 2_000 if args.quick else args.n
    rows_in = rows_out = crashes = 0
    codes: Counter[str] = Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xmodal-fuzz-") as tmp:
        world = Path(tmp) / "world"
        pool = sample_pool(world)
        for fmt in ("jsonl", "parquet"):
            for k, start in enumerate(range(0, n, args.chunk)):
                size = min(args.chunk, n - start)
                seed = args.seed * 100_000 + k * 2 + (fmt == "parquet")
                manifest = world / f"fuzz-{k:04d}.{fmt}"
                if fmt == "jsonl":
                    manifest.write_bytes(b"\n".join(mutate_records(pool, size, seed)) + b"\n")
                    numbers = range(1, size + 1)
                else:
                    manifest.write_bytes(mutated_parquet(pool, size, seed)[0])
                    numbers = range(size)
                out, crash = run_chunk(manifest, Path(tmp) / f"out-{fmt}-{k:04d}", numbers, codes)
                rows_in += size
                rows_out += out
                if crash is not None:
                    crashes += 1
                    print(f"crash: {manifest.name} (seed {seed}): {crash}", flush=True)
                manifest.unlink()
                print(f"{fmt} {start + size}/{n}: rows in {rows_in}, out {rows_out}, crashes {crashes} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    print("by code: " + ", ".join(f"{c} {v}" for c, v in codes.most_common()))
    report("fuzz_ingest", f"mutated rows in ({n:,} JSONL lines + {n:,} Parquet rows)", rows_in)
    report("fuzz_ingest", "rows out, each line exactly once with its code", rows_out, "= rows in")
    report("fuzz_ingest", "crashes (a manifest whose check raised or exited non-zero)", crashes, "0")
    report("fuzz_ingest", "mutations/s through ingest + check, in-process", rows_in / seconds)
    return 0 if rows_out == rows_in and crashes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
