"""Release-step driver memory: how much the release adds on top of the final table it is given.

In-process (``xmodal run --local``, ``pipeline.build.release_table``) the release step (metrics,
gates, report, shards, manifest) runs over one ``pyarrow.Table`` of every row, the table the
local runner built; on Ray the same code reads the staged rows as a stream and the driver holds
no rows (``bench_scale`` measures that). This measures what the in-process path adds:
the demo's final table (the sample world through ``configs/demo.yaml``'s stages, in-process) is
repeated ``x4`` and ``x16`` with fresh ids; a child process reads it, notes its resident memory,
runs ``pipeline.build.release_table`` and notes its peak (``VmHWM``). Printed for each: the peak
above the loaded table; then the slope between the two, (peak above table at x16 - at x4) /
(table bytes at x16 - at x4): the driver memory the release step adds per byte of final table,
fixed costs (imports, plotting) cancelled. With the table's bytes per row this estimates a
release's driver memory: rows x KiB/row x (1 + slope) + the fixed part.

Run: ``python -m benchmarks.bench_release`` (``--quick``: x2 and x4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._result import report  # noqa: E402

CONFIG = ROOT / "configs" / "demo.yaml"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def final_table(work: Path) -> Path:
    """The demo's final table (every row, kept and rejected), written once to Parquet."""
    from pipeline.build import run_local
    from pipeline.run.config import load_config
    from pipeline.run.ingest import mark_duplicate_ids
    from pipeline.world import generate_world

    generate_world(work / "sample", n=200, fault_rate=0.1, seed=0)
    cfg = load_config(CONFIG).model_copy(update={"inputs": [str(work / "sample" / "manifest.jsonl")]})
    table, _ = run_local(cfg)
    path = work / "final.parquet"
    pq.write_table(mark_duplicate_ids(table), path)
    return path


def repeated(table: pa.Table, times: int) -> pa.Table:
    """``times`` copies of the table; every copy's ids (and parent ids) get a suffix."""
    copies = []
    for k in range(times):
        t = table
        for name in ("id", "parent_id"):
            col = t[name]
            t = t.set_column(t.schema.get_field_index(name), name,
                             pc.if_else(pc.is_null(col), col, pc.binary_join_element_wise(col, f"~{k}", "")))
        copies.append(t)
    return pa.concat_tables(copies).combine_chunks()


def child(parquet: str, times: int, out: str) -> dict[str, Any]:
    """In a fresh process: load, repeat, then release; memory from /proc/self/status."""
    from pipeline.build import release_table
    from pipeline.release.writer import InputFingerprint
    from pipeline.run.config import GatesConfig, load_config

    table = repeated(pq.read_table(parquet), times)
    roots = int(pc.sum(pc.is_null(table["parent_id"])).as_py())
    loaded_kib = _status_kib("VmRSS")
    cfg = load_config(CONFIG)
    # Copies score alike, so retrieval ties everywhere: the gates are off (they are not measured).
    cfg = cfg.model_copy(update={"release": cfg.release.model_copy(update={"output": out, "overwrite": True}),
                                 "gates": GatesConfig()})
    started = time.perf_counter()
    result = release_table(cfg, table, [InputFingerprint("bench", 0, "x" * 64, roots)],
                           [("bench", table.num_rows, 0.0)])
    return {"rows": table.num_rows, "table_bytes": table.nbytes, "loaded_kib": loaded_kib,
            "peak_kib": _status_kib("VmHWM"), "shards": len(result.shards),
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="x4 only")
    parser.add_argument("--child", nargs=3, metavar=("PARQUET", "TIMES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return []
    work = Path(tempfile.mkdtemp(prefix="xmodal-bench-release-"))
    parquet = final_table(work)
    runs = []
    for times in (2, 4) if args.quick else (4, 16):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_release", "--child", str(parquet),
                               str(times), str(work / f"rel-{times}")],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"release of x{times} failed:\n{proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(m)
        print(f"x{times}: {m['rows']} rows, table {m['table_bytes'] / 2**20:.1f} MiB "
              f"({m['table_bytes'] / m['rows'] / 1024:.1f} KiB/row), RSS after load "
              f"{m['loaded_kib'] / 1024:.0f} MiB, peak {m['peak_kib'] / 1024:.0f} MiB, "
              f"release step {m['seconds']:.1f}s", flush=True)
    small, large = runs

    def above(m: dict[str, Any]) -> float:
        return (m["peak_kib"] - m["loaded_kib"]) * 1024

    slope = (above(large) - above(small)) / (large["table_bytes"] - small["table_bytes"])
    results = [
        {"benchmark": "release", "metric": f"final table KiB per row (demo stages, {large['rows']} rows)",
         "value": round(large["table_bytes"] / large["rows"] / 1024, 2), "target": ""},
        {"benchmark": "release", "metric": f"release peak above the table, {large['rows']} rows (MiB)",
         "value": round(above(large) / 2**20, 1), "target": ""},
        {"benchmark": "release", "metric": "release driver memory added per byte of final table (slope)",
         "value": round(slope, 2), "target": ""},
        {"benchmark": "release", "metric": f"release step rows/s on the driver ({large['rows']} rows)",
         "value": round(large["rows"] / large["seconds"]), "target": ""},
    ]
    for r in results:
        report(r["benchmark"], r["metric"], r["value"], r["target"])
    return results


if __name__ == "__main__":
    main()
