"""Scale: a model-free build on bulk worlds of growing size, on a local Ray, from one run.

For each size N (default 10 k, 100 k, 1 M records; ``--quick``: 2 k and 10 k) a bulk sample world
(``xmodal sample --n N --media-pool 200``) goes through placeholder_lint, media_check,
object_boxes, object_anchor, object_spatial, object_hallucination and segment_checks to a
release, in a child process (``run_config``, Ray with 2 CPUs). Printed per size: wall seconds,
end-to-end records/s, the driver's peak RSS (``VmHWM`` of the child: the driver only; Ray's
workers are other processes) and the release step's seconds. Then, from the same run:

- driver peak RSS at the largest size / at the smallest (target <= 1.3: memory does not grow
  with the dataset);
- release step rows/s / pyarrow's own zstd Parquet write of the same rows in one process
  (target >= 0.5; the rows are read back from the release, written to a temp file with
  ``pyarrow.parquet.write_table``);
- end-to-end records/s with 2 CPUs / with 1 CPU on the smallest world (target >= 1.6).

Run: ``python -m benchmarks.bench_scale [--quick] [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._result import report  # noqa: E402

STAGES = ["placeholder_lint", "media_check", "object_boxes", "object_anchor", "object_spatial",
          "object_hallucination", "segment_checks"]
MEDIA_POOL = 200


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


class _AnonPeak:
    """Peak of the driver's private memory (``RssAnon``), sampled every 0.1 s in a thread.

    ``VmHWM`` also counts the pages of Ray's shared-memory object store that the driver has
    touched (``RssShmem``, a view of objects that live in the store, not the driver's own
    memory); ``RssAnon`` is what the driver itself holds."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self.trace: list[tuple[float, int]] = []  # (seconds, RssAnon KiB) every 2 s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(0.1):
            now = _status_kib("RssAnon")
            self.peak = max(self.peak, now)
            t = time.perf_counter() - t0
            if not self.trace or t - self.trace[-1][0] >= 2:
                self.trace.append((round(t, 1), now))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status_kib("RssAnon"))


def child(config: str) -> None:
    """Run one build; print its figures as one JSON line."""
    import pyarrow.parquet as pq

    from pipeline.build import run_config
    from pipeline.run.config import load_config

    cfg = load_config(config)
    anon = _AnonPeak()
    t0 = time.perf_counter()
    result = run_config(cfg)
    wall = time.perf_counter() - t0
    hwm = _status_kib("VmHWM")
    anon_peak = anon.stop()
    release_dir = Path(result.uri)
    shards = [release_dir / s["path"] for s in result.manifest["shards"] if s["format"] == "parquet"]
    rows = sum(pq.read_metadata(p).num_rows for p in shards)
    # pyarrow's own write of the same rows, one file, in this process: the baseline
    # (each shard's rows as one table: kept and reject shards have different schemas)
    tables = [pq.read_table(p) for p in shards]
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        for i, table in enumerate(tables):
            pq.write_table(table, f"{tmp}/{i}.parquet", compression="zstd")
        pyarrow_s = time.perf_counter() - t1
    print("CHILD " + json.dumps({
        "wall_s": wall, "driver_hwm_kib": hwm, "driver_anon_kib": anon_peak, "anon_trace": anon.trace,
        "records": result.manifest["counts"]["input_records"],
        "rows": rows, "release_s": result.seconds.get("release"), "release_parts": result.seconds,
        "pyarrow_s": pyarrow_s, "stage_timings": result.manifest["stage_timings"]}), flush=True)


def run_size(work: Path, n: int, cpus: int, env: dict[str, str]) -> dict[str, Any]:
    world = work / f"world-{n}"
    if not (world / "manifest.jsonl").exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "sample", "--out", str(world), "--n", str(n),
                        "--media-pool", str(MEDIA_POOL), "--faults", "0.1"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        print(f"world of {n} records in {time.perf_counter() - t0:.1f}s", flush=True)
    config = work / f"scale-{n}-{cpus}.yaml"
    config.write_text(json.dumps({
        "dataset": "scale", "version": f"n{n}-c{cpus}", "inputs": [str(world / "manifest.jsonl")],
        "ray": {"num_cpus": cpus, "temp_dir": str(work / f"ray-{n}-{cpus}")},
        "stages": STAGES, "release": {"output": str(work / "releases"), "overwrite": True, "jsonl": False}}))
    # Ray's CPU count is logical: tasks of 0.5 CPU on "1 CPU" still run on every core. The
    # child and every Ray process it starts are pinned to ``cpus`` cores, so the ratio is real.
    pin = ["taskset", "-c", f"0-{cpus - 1}"] if shutil.which("taskset") and cpus < (os.cpu_count() or 1) else []
    proc = subprocess.run([*pin, sys.executable, "-m", "benchmarks.bench_scale", "--child", str(config)], env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CHILD "))
    out = json.loads(line[len("CHILD "):])
    print(f"N={n:>9,} cpus={cpus}: {out['wall_s']:8.1f} s  {out['records'] / out['wall_s']:8.1f} records/s  "
          f"driver peak {out['driver_hwm_kib'] / 1024:7.0f} MiB (own {out['driver_anon_kib'] / 1024:5.0f} MiB)  "
          f"release {out['release_s']:6.1f} s "
          f"({out['rows']:,} rows; pyarrow alone {out['pyarrow_s']:.2f} s)", flush=True)
    for t in out["stage_timings"]:
        per_row = 1000 * t["seconds"] / max(1, t["rows_in"])
        print(f"    {t['stage']:22s} {t['rows_in']:>9,} in {t['rows_out']:>9,} out {t['seconds']:8.1f} s "
              f"({per_row:.2f} ms/row, summed over workers)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None, help="comma-separated record counts")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help="keep worlds and releases here (default: a temp dir)")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    sizes = [int(s) for s in (args.sizes or ("2000,10000" if args.quick else "10000,100000,1000000")).split(",")]
    work_ctx = tempfile.TemporaryDirectory(prefix="xmodal-scale-") if args.work is None else None
    work = Path(args.work or work_ctx.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    token = work / "ray-token"
    if not token.exists():
        token.write_text(os.urandom(16).hex())
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(ROOT))
    results = {n: run_size(work, n, 2, env) for n in sizes}
    small, large = sizes[0], sizes[-1]
    one_cpu = run_size(work, small, 1, env)
    rss_ratio = results[large]["driver_hwm_kib"] / results[small]["driver_hwm_kib"]
    big = results[large]
    release_ratio = big["pyarrow_s"] / big["release_s"]
    speedup = (results[small]["records"] / results[small]["wall_s"]) / (one_cpu["records"] / one_cpu["wall_s"])
    report("scale", f"driver peak RSS {large:,} / {small:,} records", round(rss_ratio, 3), "<= 1.3")
    own = results[large]["driver_anon_kib"] / results[small]["driver_anon_kib"]
    report("scale", f"driver's own memory (RssAnon) {large:,} / {small:,} records", round(own, 3))
    if len(sizes) > 2:  # past the size where shards fill up, memory should be flat
        mid = sizes[-2]
        report("scale", f"driver peak RSS {large:,} / {mid:,} records",
               round(results[large]["driver_hwm_kib"] / results[mid]["driver_hwm_kib"], 3))
    report("scale", f"end-to-end records/s at {large:,} (2 CPUs)", round(big["records"] / big["wall_s"], 1))
    report("scale", f"release rows/s / pyarrow zstd write rows/s ({big['rows']:,} rows)", round(release_ratio, 3),
           ">= 0.5")
    report("scale", f"records/s 2 CPUs / 1 CPU ({small:,} records)", round(speedup, 3), ">= 1.6")
    if work_ctx is not None:
        work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
