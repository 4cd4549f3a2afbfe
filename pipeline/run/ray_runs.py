"""The last step of a Ray run: the release's work on each block, on the workers.

``finalize`` (the release's ``RunMaker``, handed in by ``pipeline.build``: this module does not
import the release) is called on every block of ``rows_per_run`` rows as it leaves the last
stage. It writes what the release reads later (its sorted runs) and returns one small summary
row, which streams back here and goes to ``on_summary`` at once: the driver holds no rows, and
what a retried task wrote before it failed is never named by a summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

Finalize = Callable[[pa.Table], pa.Table]
NUM_CPUS = 0.5  # fractional: a 2-core machine never deadlocks its read tasks


class _Finalize:
    def __init__(self, fn: Finalize) -> None:
        self.fn = fn

    def __call__(self, block: pa.Table) -> pa.Table:
        return self.fn(block)


def write_runs(ds: Any, finalize: Finalize, on_summary: Callable[[pa.Table], None], rows_per_run: int, label: str,
               interval_s: float, progress: Callable[[], str] | None = None) -> int:
    """Execute ``ds`` through ``finalize`` (module docstring), logging rows done and rows/s every
    ``interval_s`` seconds; return the rows."""
    step = type("release_runs", (_Finalize,), {"__module__": __name__})(finalize)
    out = ds.map_batches(step, batch_format="pyarrow", batch_size=rows_per_run, num_cpus=NUM_CPUS)
    done = [0]
    stop = threading.Event()
    t0 = time.perf_counter()

    def report() -> None:
        while not stop.wait(interval_s):
            elapsed = time.perf_counter() - t0
            log.info("stage %s: %d rows done, %.1f rows/s, %.0f s%s", label, done[0], done[0] / elapsed, elapsed,
                     f"; per stage out/in: {progress()}" if progress else "")

    thread = threading.Thread(target=report, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        for summary in out.iter_batches(batch_format="pyarrow", batch_size=None):
            on_summary(summary)
            done[0] += int(pc.sum(summary["rows"]).as_py() or 0)
    finally:
        stop.set()
        thread.join()
    elapsed = time.perf_counter() - t0
    log.info("stage %s done: %d rows in %.1f s (%.1f rows/s)", label, done[0], elapsed, done[0] / max(elapsed, 1e-9))
    return done[0]
