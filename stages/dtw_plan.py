"""How a segment's DTW fits its limits, and how the paths of its chunks join.

:func:`choose_downsample` picks the smallest power-of-two downsampling whose memory estimate
(:func:`stages.dtw.memory_estimate`) fits the worker's quota, or raises :class:`PlanError` (the
row is then ``ERR_CROSS_MDL_DTW_OOM``); :func:`chunk_bounds` cuts a long segment into
overlapping chunks and :func:`stitch` joins their paths into one monotone path. Pure functions
on numbers: no Arrow, no media.
"""

from __future__ import annotations

import math

import numpy as np

from stages import dtw


class PlanError(Exception):
    """The segment cannot be aligned inside the length cap and memory quota."""


def choose_downsample(n: int, m: int, d: int, method: dtw.DtwMethod, half_width: int,
                      radius: int, quota: int, max_factor: int) -> tuple[int, int]:
    """Smallest power-of-two factor whose estimate fits ``quota``: ``(factor, bytes)``."""
    factor = 1
    while True:
        need = dtw.memory_estimate(math.ceil(n / factor), math.ceil(m / factor), d, method,
                                   max(1, half_width // factor), radius)
        if need <= quota:
            return factor, need
        if factor * 2 > max_factor:
            raise PlanError(f"alignment of {n} x {m} frames needs {need / 2**20:.1f} MiB at "
                            f"downsample {factor}, over the quota of {quota / 2**20:.1f} MiB")
        factor *= 2


def chunk_bounds(duration_us: int, chunk_us: int, overlap_us: int) -> list[tuple[int, int]]:
    """``[start, end)`` of overlapping chunks covering ``[0, duration_us)``."""
    step = max(1, chunk_us - overlap_us)
    bounds, start = [], 0
    while True:
        end = min(duration_us, start + chunk_us)
        bounds.append((start, end))
        if end >= duration_us:
            return bounds
        start += step


def stitch(pieces: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Join chunk paths (global indices): each piece keeps steps from its cut time on (the
    middle of its overlap with the previous piece, as a video time), then the result is made
    monotone. ``pieces[k] = (cut_us, path_times (K, 2) int64, step_cost (K,))``."""
    paths, costs = [], []
    for k, (_, times, steps) in enumerate(pieces):
        keep = np.ones(len(times), bool)
        if k > 0:
            keep &= times[:, 0] >= pieces[k][0]
        if k + 1 < len(pieces):
            keep &= times[:, 0] < pieces[k + 1][0]
        paths.append(times[keep])
        costs.append(steps[keep])
    path = np.maximum.accumulate(np.concatenate(paths), axis=0)
    return path, np.concatenate(costs)
