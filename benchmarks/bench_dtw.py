"""DTW benchmark: exact banded (numba) vs fastdtw (compiled and pure Python), single core.

Inputs: a 30-s segment as 900 video frames (30 fps) x 1500 audio frames (50 Hz), d=128, made
from one latent trajectory read at a slowly drifting time base (so the true path is near, not
on, the proportional one: up to 0.5 s off) plus noise. Prints alignments/s, the speed of each
method as a ratio to exact banded, the cost above the exact full-DTW cost, and the peak memory of a
10-minute segment (18000 x 30000 frames) measured in a fresh process as the rise of the
resident set (VmHWM after ``/proc/self/clear_refs``; numba allocations are invisible to
tracemalloc) next to the tracemalloc peak and the stage's own estimate.

Run: ``python benchmarks/bench_dtw.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import os

from benchmarks._result import report

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages import dtw  # noqa: E402

FPS, AUDIO_HZ, DIM = 30, 50, 128
BAND_S = 1.0  # exact method: band half-width in seconds (the stage's default band_us)
RADIUS = 10  # fastdtw: the stage's default radius
KNOTS_PER_S, NOISE = 10, 3.0


def make_pair(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(video, audio) features of one clip; the audio clock drifts by up to 0.5 s, and the
    noise is strong enough (sd 3 against latent steps of sd 1) that fastdtw's coarse passes
    can miss the best path."""
    rng = np.random.default_rng(seed)
    knots = int(seconds * KNOTS_PER_S) + 2  # latent: piecewise linear random walk
    latent = np.cumsum(rng.normal(size=(knots, DIM)), axis=0).astype(np.float32)

    def read(times: np.ndarray) -> np.ndarray:
        pos = np.clip(times * KNOTS_PER_S, 0, knots - 1.001)
        base = pos.astype(np.int64)
        frac = (pos - base)[:, None].astype(np.float32)
        return latent[base] * (1 - frac) + latent[base + 1] * frac

    tv = np.arange(int(seconds * FPS)) / FPS
    ta = np.arange(int(seconds * AUDIO_HZ)) / AUDIO_HZ
    drift = 0.5 * np.sin(2 * np.pi * ta / max(seconds, 1.0))
    video = read(tv)
    video += NOISE * rng.standard_normal(video.shape, dtype=np.float32)
    audio = read(np.clip(ta + drift, 0, seconds))
    audio += NOISE * rng.standard_normal(audio.shape, dtype=np.float32)
    return video, audio


def rate(fn: Callable[[], object], min_seconds: float, max_runs: int) -> float:
    """Calls per second (after one warm-up call)."""
    fn()
    runs, start = 0, time.perf_counter()
    while runs < max_runs and (runs == 0 or time.perf_counter() - start < min_seconds):
        fn()
        runs += 1
    return runs / (time.perf_counter() - start)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def long_memory_child(method: dtw.DtwMethod) -> None:
    """In a fresh process: peak memory of aligning a 10-minute segment (prints JSON)."""
    import tracemalloc

    small_x, small_y = make_pair(2.0)
    dtw.align(small_x, small_y, method, half_width=50, radius=RADIUS)  # compile outside
    x, y = make_pair(600.0, seed=1)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_kib("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    result = dtw.align(x, y, method, half_width=int(BAND_S * AUDIO_HZ), radius=RADIUS)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    peak = _rss_kib("VmHWM")
    estimate = dtw.memory_estimate(len(x), len(y), DIM, method,
                                   int(BAND_S * AUDIO_HZ), RADIUS)
    print(json.dumps({"features_mb": (x.nbytes + y.nbytes) / 2**20,
                      "rss_rise_mb": (peak - base) / 1024, "traced_mb": traced / 2**20,
                      "estimate_mb": estimate / 2**20, "seconds": seconds,
                      "frames": [len(x), len(y)], "path": result.path_length}))


def long_memory(method: str) -> dict[str, float] | None:
    # Large blocks through mmap, so that freed memory leaves the resident set and the rise
    # measured while aligning is what aligning allocates (not reused heap pages).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "--long-memory-child", method],
                         capture_output=True, text=True, check=False, timeout=900, env=env)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, no 10-minute test")
    parser.add_argument("--long-memory-child", choices=["exact", "fastdtw"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.long_memory_child:
        long_memory_child(args.long_memory_child)
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # single core
    build = dtw.fastdtw_build()
    x, y = make_pair(30.0)
    w = int(BAND_S * AUDIO_HZ)
    full = dtw.dtw_banded(x, y, len(y))  # exact full DTW: the accuracy reference
    secs = 0.5 if args.quick else 3.0
    rows: list[tuple[str, float, float]] = []  # (name, per second, cost)
    exact = dtw.dtw_banded(x, y, w)
    rows.append((f"exact banded (band {BAND_S:g} s = {w} frames)",
                 rate(lambda: dtw.dtw_banded(x, y, w), secs, 2000), exact.cost))
    rows.append(("exact full (no band)", rate(lambda: dtw.dtw_banded(x, y, len(y)), secs, 200),
                 full.cost))
    for radius in (1, RADIUS):
        if build == "compiled":
            res = dtw.dtw_fastdtw(x, y, radius, "compiled")
            rows.append((f"fastdtw compiled r={radius}",
                         rate(functools.partial(dtw.dtw_fastdtw, x, y, radius, "compiled"), secs, 200),
                         res.cost))
        if build != "missing":
            res = dtw.dtw_fastdtw(x, y, radius, "pure")
            pure_runs = 1 if args.quick or radius > 1 else 2
            rows.append((f"fastdtw pure-Python r={radius}",
                         rate(functools.partial(dtw.dtw_fastdtw, x, y, radius, "pure"), 0.0, pure_runs),
                         res.cost))
    base_rate = rows[0][1]
    report("dtw", "exact banded alignments/s, 30-s 900x1500, d=128, 1 core", base_rate, ">= 100")
    for name, per_s, cost in rows[1:]:
        if name.startswith("fastdtw"):
            drift = 100 * (cost - full.cost) / full.cost
            report("dtw", f"{name}: speed / exact banded (cost {drift:+.2f}%)", per_s / base_rate)
    print(f"DTW, single core, 30-s segment {len(x)} x {len(y)} frames, d={DIM}; "
          f"fastdtw build installed: {build}")
    print(f"{'method':<38}{'align/s':>10}{'ms':>10}{'x exact':>10}{'cost vs full':>14}")
    for name, per_s, cost in rows:
        print(f"{name:<38}{per_s:>10.1f}{1000 / per_s:>10.2f}{per_s / base_rate:>10.3f}"
              f"{100 * (cost - full.cost) / full.cost:>13.3f}%")
    if not args.quick:
        print("\n10-minute segment (18000 x 30000 frames, d=128), fresh process:")
        print("(features: the float32 inputs; align: RSS rise while aligning; traced: tracemalloc"
              " peak while aligning; estimate: the stage's bound, features included)")
        print(f"{'method':<24}{'features MB':>12}{'align MB':>10}{'total MB':>10}"
              f"{'traced MB':>11}{'estimate MB':>12}{'s':>8}")
        for method in ("exact", "fastdtw") if build == "compiled" else ("exact",):
            mem = long_memory(method)
            if mem:
                total = mem["features_mb"] + mem["rss_rise_mb"]
                report("dtw", f"10-minute segment peak MB ({method}: features + align)", total,
                       "< 64" if method == "exact" else "")
                print(f"{method:<24}{mem['features_mb']:>12.1f}{mem['rss_rise_mb']:>10.1f}"
                      f"{total:>10.1f}{mem['traced_mb']:>11.1f}{mem['estimate_mb']:>12.1f}"
                      f"{mem['seconds']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
