"""Exact banded DTW against a plain O(N*M) reference, fastdtw builds, memory bounds."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import dtw

sizes = st.integers(min_value=1, max_value=24)
dims = st.integers(min_value=1, max_value=4)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _pair(n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


def _band_needed(path: np.ndarray, n: int, m: int) -> int:
    """Half-width (columns) that a slanted band needs to contain ``path``."""
    centre = path[:, 0] * ((m - 1) / (n - 1)) if n > 1 else np.zeros(len(path))
    return int(np.ceil(np.max(np.abs(path[:, 1] - centre))))


@settings(max_examples=60, deadline=None)
@given(n=sizes, m=sizes, d=dims, seed=seeds)
def test_exact_with_full_band_equals_reference(n: int, m: int, d: int, seed: int) -> None:
    x, y = _pair(n, m, d, seed)
    ref = dtw.dtw_reference(x, y)
    got = dtw.dtw_banded(x, y, half_width=n + m)
    assert got.cost == pytest.approx(ref.cost, rel=1e-9, abs=1e-9)
    np.testing.assert_array_equal(got.path, ref.path)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 30), m=st.integers(2, 30), d=dims, seed=seeds)
def test_banded_equals_exact_when_band_covers_true_path(n: int, m: int, d: int,
                                                        seed: int) -> None:
    x, y = _pair(n, m, d, seed)
    ref = dtw.dtw_reference(x, y)
    got = dtw.dtw_banded(x, y, half_width=_band_needed(ref.path, n, m))
    assert got.cost == pytest.approx(ref.cost, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), m=st.integers(2, 30), w=st.integers(0, 5), seed=seeds)
def test_narrow_band_never_beats_exact_and_path_is_valid(n: int, m: int, w: int,
                                                        seed: int) -> None:
    x, y = _pair(n, m, 3, seed)
    got = dtw.dtw_banded(x, y, half_width=w)
    assert got.cost >= dtw.dtw_reference(x, y).cost - 1e-9
    path = got.path
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    steps = np.diff(path, axis=0)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=1) >= 1).all()
    assert got.step_cost.sum() == pytest.approx(got.cost, rel=1e-9)


def test_time_warped_copy_is_found_inside_a_band() -> None:
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=(120, 8)), axis=0)
    warp = np.clip(np.round(np.arange(200) * 119 / 199 + 4 * np.sin(np.arange(200) / 20)), 0,
                   119).astype(int)
    y = x[warp]
    banded = dtw.dtw_banded(x, y, half_width=15)
    assert banded.cost == pytest.approx(dtw.dtw_reference(x, y).cost, rel=1e-9)


def test_float32_inputs_stay_close_to_float64() -> None:
    x, y = _pair(40, 60, 16, 7)
    a = dtw.dtw_banded(x.astype(np.float32), y.astype(np.float32), 20)
    b = dtw.dtw_banded(x, y, 20)
    assert a.cost == pytest.approx(b.cost, rel=1e-5)


def test_reference_refuses_large_inputs() -> None:
    x = np.zeros((3000, 1))
    with pytest.raises(ValueError, match="refuses"):
        dtw.dtw_reference(x, np.zeros((2000, 1)))


def test_memory_estimate_is_linear_not_n_times_m() -> None:
    # a 10-minute segment: 30 fps video x 50 Hz audio, d=128, 1-s band
    ten_minutes = dtw.exact_memory_bytes(18_000, 30_000, 128, 50)
    assert ten_minutes < 64 * 2**20
    assert ten_minutes < 18_000 * 30_000  # a single uint8 n x m matrix would not fit
    doubled = dtw.exact_memory_bytes(36_000, 60_000, 128, 50)
    assert doubled < 2.1 * ten_minutes


def test_band_limits_are_connected_and_cover_the_corners() -> None:
    for n, m, w in [(900, 1500, 1), (1500, 900, 1), (5, 100, 0), (100, 5, 3), (1, 7, 0)]:
        lo, hi = dtw.band_limits(n, m, w)
        assert lo[0] == 0 and hi[-1] == m - 1
        assert (lo[1:] <= hi[:-1] + 1).all() and (np.diff(lo) >= 0).all()


def test_downsample_averages_groups() -> None:
    a = np.arange(10, dtype=np.float64)[:, None]
    np.testing.assert_allclose(dtw.downsample(a, 4)[:, 0], [1.5, 5.5, 8.5])
    assert dtw.downsample(a, 1) is a


def test_align_rejects_unknown_method() -> None:
    x, y = _pair(4, 4, 2, 0)
    with pytest.raises(ValueError, match="unknown DTW method"):
        dtw.align(x, y, "librosa")  # type: ignore[arg-type]


def test_fastdtw_is_the_compiled_build_and_close_to_exact() -> None:
    pytest.importorskip("fastdtw")
    assert dtw.fastdtw_build() == "compiled", dtw.FASTDTW_INSTALL
    x, y = _pair(80, 120, 4, 11)
    exact = dtw.dtw_reference(x, y).cost
    compiled = dtw.align(x, y, "fastdtw", radius=10)
    pure = dtw.dtw_fastdtw(x, y, 10, build="pure")
    assert exact - 1e-9 <= compiled.cost <= exact * 1.05
    assert pure.cost == pytest.approx(compiled.cost, rel=1e-6)
    assert compiled.method == "fastdtw-compiled" and pure.method == "fastdtw-pure"


def test_pure_only_fastdtw_is_refused(tmp_path: Path) -> None:
    """A real pure-Python install (the package without its extension) is detected."""
    fastdtw = pytest.importorskip("fastdtw")
    package = Path(fastdtw.__file__).parent
    pure_dir = tmp_path / "fastdtw"
    pure_dir.mkdir()
    for name in ("__init__.py", "fastdtw.py"):
        shutil.copy(package / name, pure_dir / name)
    saved = {k: v for k, v in sys.modules.items() if k == "fastdtw" or k.startswith("fastdtw.")}
    for key in saved:
        del sys.modules[key]
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.invalidate_caches()
        assert dtw.fastdtw_build() == "pure"
        x, y = _pair(10, 12, 2, 0)
        with pytest.raises(RuntimeError, match="no-build-isolation"):
            dtw.align(x, y, "fastdtw")
        assert dtw.align(x, y, "fastdtw", fastdtw_pure_ok=True).path_length >= 12
        from stages.segment_align import SegmentAlign

        with pytest.raises(RuntimeError, match="not compiled"):
            SegmentAlign({"method": "fastdtw"}).setup()
    finally:
        sys.path.remove(str(tmp_path))
        for key in [k for k in sys.modules if k == "fastdtw" or k.startswith("fastdtw.")]:
            del sys.modules[key]
        sys.modules.update(saved)
