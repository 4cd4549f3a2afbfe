"""Dynamic time warping for segment alignment: pure algorithms, no Arrow, no I/O.

Two methods sit behind :func:`align`:

- ``exact``: exact DTW restricted to a slanted Sakoe-Chiba band around the proportional path
  (row ``i`` of ``x`` maps near column ``i * (m-1)/(n-1)`` of ``y``), compiled with numba. Memory
  is O(n * w): one ``uint8`` back-pointer per band cell and two rows of float64 costs. When the
  band covers the true path the result equals full DTW.
- ``fastdtw``: the ``fastdtw`` package (Salvador & Chan), Euclidean distance (``dist=2``). Only
  its compiled build (``fastdtw._fastdtw``, a C++ extension) is fast enough; the pure-Python
  fallback is ~50x slower, so :func:`fastdtw_build` tells which one is installed.

Both use the same cost: the sum of Euclidean distances between the paired frames on the path.
:func:`dtw_reference` is a plain O(n*m) implementation kept for tests; it refuses large inputs so
that no code path builds an n x m matrix for long segments.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import math
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

DtwMethod = Literal["exact", "fastdtw"]
DIAG, UP, LEFT, START = 0, 1, 2, 3
REFERENCE_MAX_CELLS = 4_000_000  # the O(n*m) reference is for tests only
FASTDTW_INSTALL = (
    "pip install --no-build-isolation --no-binary fastdtw fastdtw==0.3.4  (Cython and numpy "
    "must already be installed in the environment)"
)


@dataclass(frozen=True)
class Alignment:
    """A warping path: ``path[k] = (i, j)`` pairs frame ``i`` of x with frame ``j`` of y.

    ``step_cost[k]`` is the local distance of step k; ``cost`` is their sum.
    """

    cost: float
    path: np.ndarray  # (K, 2) int64, monotone from (0, 0) to (n-1, m-1)
    step_cost: np.ndarray  # (K,) float64
    method: str

    @property
    def path_length(self) -> int:
        return int(self.path.shape[0])


# ---- band geometry ------------------------------------------------------------------------
def min_band_half_width(n: int, m: int) -> int:
    """Smallest half-width (in columns) for which the slanted band is connected."""
    if n <= 1 or m <= 1:
        return max(m, 1)
    return int(math.ceil((m - 1) / (n - 1))) + 1


def band_limits(n: int, m: int, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Column range ``[lo[i], hi[i]]`` of each row of the slanted band (inclusive)."""
    w = max(int(half_width), min_band_half_width(n, m))
    rows = np.arange(n, dtype=np.float64)
    centre = rows * ((m - 1) / (n - 1)) if n > 1 else np.zeros(1)
    lo = np.clip(np.ceil(centre - w), 0, m - 1).astype(np.int64)
    hi = np.clip(np.floor(centre + w), 0, m - 1).astype(np.int64)
    lo[0], hi[-1] = 0, m - 1
    return lo, hi


def exact_memory_bytes(n: int, m: int, d: int, half_width: int, itemsize: int = 4) -> int:
    """Upper bound of what :func:`dtw_banded` allocates, features of x and y included."""
    w = max(int(half_width), min_band_half_width(n, m))
    width = min(2 * w + 1, m)
    features = (n + m) * d * itemsize
    backpointers = n * width  # uint8
    rows = 2 * width * 8 + 2 * n * 8  # two cost rows, lo/hi
    path = (n + m) * (2 * 8 + 8)  # path + step costs
    return features + backpointers + rows + path


def fastdtw_memory_bytes(n: int, m: int, d: int, radius: int) -> int:
    """Rough upper bound for fastdtw: at each resolution the window holds about
    ``(n + m) * 2 * (2r + 2)`` cells of ~40 bytes (cost, two indices, window entry); the levels
    add up to about twice the finest one. Features are converted to float64."""
    cells = (n + m) * 2 * (2 * radius + 2)
    return (n + m) * d * 8 + 2 * cells * 40 + (n + m) * 64


# ---- exact banded DTW (numba) --------------------------------------------------------------
@numba.njit(cache=True, fastmath=True, nogil=True)
def _banded_kernel(x, y, lo, hi, width):
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    bp = np.empty((n, width), dtype=np.uint8)
    prev = np.full(width, np.inf)
    cur = np.full(width, np.inf)
    for i in range(n):
        plo, phi = (lo[i - 1], hi[i - 1]) if i > 0 else (1, 0)
        for j in range(lo[i], hi[i] + 1):
            acc = x[i, 0] - x[i, 0]  # a zero of the input dtype
            for k in range(d):
                diff = x[i, k] - y[j, k]
                acc += diff * diff
            dist = math.sqrt(np.float64(acc))
            if i == 0 and j == 0:
                best, code = 0.0, START
            else:
                best, code = np.inf, START
                if i > 0 and plo <= j - 1 <= phi and prev[j - 1 - plo] < best:
                    best, code = prev[j - 1 - plo], DIAG
                if i > 0 and plo <= j <= phi and prev[j - plo] < best:
                    best, code = prev[j - plo], UP
                if j - 1 >= lo[i] and cur[j - 1 - lo[i]] < best:
                    best, code = cur[j - 1 - lo[i]], LEFT
            cur[j - lo[i]] = best + dist
            bp[i, j - lo[i]] = code
        prev, cur = cur, prev
        cur[:] = np.inf
    total = prev[m - 1 - lo[n - 1]]
    # backtrack; the path has at most n + m - 1 steps
    path = np.empty((n + m, 2), dtype=np.int64)
    k, i, j = 0, n - 1, m - 1
    while True:
        path[k, 0], path[k, 1] = i, j
        k += 1
        code = bp[i, j - lo[i]]
        if code == START:
            break
        if code == DIAG:
            i, j = i - 1, j - 1
        elif code == UP:
            i -= 1
        else:
            j -= 1
    return total, path[:k][::-1].copy()


@numba.njit(cache=True, fastmath=True, nogil=True)
def _step_costs(x, y, path):
    out = np.empty(path.shape[0])
    for k in range(path.shape[0]):
        acc = 0.0
        for c in range(x.shape[1]):
            diff = np.float64(x[path[k, 0], c]) - np.float64(y[path[k, 1], c])
            acc += diff * diff
        out[k] = math.sqrt(acc)
    return out


def _as_features(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (frames, dims) array, got {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def dtw_banded(x: np.ndarray, y: np.ndarray, half_width: int) -> Alignment:
    """Exact DTW inside a slanted band of ``half_width`` columns each side of the diagonal."""
    x, y = _as_features(x), _as_features(y)
    if x.dtype != y.dtype:
        x, y = x.astype(np.float64), y.astype(np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} != {y.shape[1]}")
    lo, hi = band_limits(x.shape[0], y.shape[0], half_width)
    width = int((hi - lo).max()) + 1
    total, path = _banded_kernel(x, y, lo, hi, width)
    return Alignment(float(total), path, _step_costs(x, y, path), "exact")


def dtw_reference(x: np.ndarray, y: np.ndarray) -> Alignment:
    """Plain O(n*m) DTW with the same tie-breaking as :func:`dtw_banded` (tests only)."""
    x, y = _as_features(x).astype(np.float64), _as_features(y).astype(np.float64)
    n, m = x.shape[0], y.shape[0]
    if n * m > REFERENCE_MAX_CELLS:
        raise ValueError(f"reference DTW refuses {n} x {m} cells (> {REFERENCE_MAX_CELLS})")
    dist = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=2))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if i == 1 and j == 1:
                acc[i, j] = dist[0, 0]
                continue
            acc[i, j] = dist[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path = [(n - 1, m - 1)]
    i, j = n, m
    while (i, j) != (1, 1):
        options = [(acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j),
                   (acc[i, j - 1], i, j - 1)]
        best = min(o[0] for o in options)
        _, i, j = next(o for o in options if o[0] == best)  # diag, up, left on ties
        path.append((i - 1, j - 1))
    arr = np.array(path[::-1], dtype=np.int64)
    return Alignment(float(acc[n, m]), arr, dist[arr[:, 0], arr[:, 1]], "reference")


# ---- fastdtw -------------------------------------------------------------------------------
def fastdtw_build() -> Literal["compiled", "pure", "missing"]:
    """Which fastdtw is importable: the compiled C++ extension, only the pure-Python module, or
    none. A source install without Cython+numpy in the build environment silently falls back to
    pure Python, hence this check."""
    try:
        ext = importlib.import_module("fastdtw._fastdtw")
    except ImportError:
        try:
            importlib.import_module("fastdtw.fastdtw")
        except ImportError:
            return "missing"
        return "pure"
    origin = getattr(ext, "__file__", "") or ""
    if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return "compiled"
    return "pure"


def dtw_fastdtw(x: np.ndarray, y: np.ndarray, radius: int, build: str = "compiled") -> Alignment:
    """fastdtw with Euclidean distance; ``build="pure"`` forces the pure-Python module."""
    x = _as_features(x).astype(np.float64)
    y = _as_features(y).astype(np.float64)
    if build == "compiled":
        if fastdtw_build() != "compiled":
            raise RuntimeError(f"compiled fastdtw is not installed; install with {FASTDTW_INSTALL}")
        module = importlib.import_module("fastdtw._fastdtw")
    else:
        module = importlib.import_module("fastdtw.fastdtw")
    _, raw_path = module.fastdtw(x, y, radius=int(radius), dist=2)
    path = np.asarray(raw_path, dtype=np.int64).reshape(-1, 2)
    steps = _step_costs(x, y, path)
    return Alignment(float(steps.sum()), path, steps, f"fastdtw-{build}")


# ---- one interface -------------------------------------------------------------------------
def memory_estimate(n: int, m: int, d: int, method: DtwMethod, half_width: int,
                    radius: int) -> int:
    """Bytes that :func:`align` needs for an ``n x m`` alignment of ``d``-dim features."""
    if method == "exact":
        return exact_memory_bytes(n, m, d, half_width)
    return fastdtw_memory_bytes(n, m, d, radius)


def align(x: np.ndarray, y: np.ndarray, method: DtwMethod = "exact", *, half_width: int = 50,
          radius: int = 10, fastdtw_pure_ok: bool = False) -> Alignment:
    """Align ``x`` (n, d) to ``y`` (m, d). ``half_width`` is the exact method's band in columns
    of ``y``; ``radius`` is fastdtw's. fastdtw refuses the pure-Python build unless
    ``fastdtw_pure_ok``."""
    if method == "exact":
        return dtw_banded(x, y, half_width)
    if method == "fastdtw":
        build = fastdtw_build()
        if build == "missing" or (build == "pure" and not fastdtw_pure_ok):
            raise RuntimeError(f"fastdtw build is {build!r}; install with {FASTDTW_INSTALL}")
        return dtw_fastdtw(x, y, radius, build)
    raise ValueError(f"unknown DTW method {method!r}")


def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool frames by ``factor`` (the last partial group is averaged as well)."""
    if factor <= 1:
        return a
    n = a.shape[0]
    groups = (n + factor - 1) // factor
    out = np.empty((groups,) + a.shape[1:], dtype=a.dtype)
    full = n // factor
    if full:
        out[:full] = a[: full * factor].reshape(full, factor, *a.shape[1:]).mean(axis=1)
    if groups > full:
        out[full] = a[full * factor:].mean(axis=0)
    return out
