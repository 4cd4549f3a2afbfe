"""Stages as Ray Data operators, each named after its stage and counting its own work.

Ray Data names an operator after the callable's class: every stage runs as a class named after
the stage (``MapBatches(media_check)``, not ``MapBatches(_TaskStage)``), so the progress bars and
``Dataset.stats()`` say which stage is which. Fused operators (consecutive task stages run in one
task) still show one line in Ray's own statistics; so each stage also reports its batches (rows
in, rows out, seconds in the stage) to a small :class:`StageStats` actor, and the driver reads
per-stage totals from it while the run goes (the progress log) and after it (the manifest).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa

from stages.base import Stage
from stages.registry import get_stage_class


class StageStats:
    """Per-stage totals: batches, rows in, rows out, seconds (summed over workers)."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self.order: list[str] = []

    def add(self, name: str, rows_in: int, rows_out: int, seconds: float) -> None:
        if name not in self.totals:
            self.totals[name] = [0, 0, 0, 0.0]
            self.order.append(name)
        t = self.totals[name]
        t[0] += 1
        t[1] += rows_in
        t[2] += rows_out
        t[3] += seconds

    def snapshot(self) -> dict[str, list[float]]:
        return dict(self.totals)


def start_stats(run_id: str) -> tuple[Any, str]:
    """The stats actor of one run (named, so that every worker finds it) and its name."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"xmodal-stage-stats-{run_id}"
    # On the driver's node: a worker node lost mid-run must not take the statistics with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    actor = ray.remote(num_cpus=0)(StageStats).options(name=name, scheduling_strategy=here,
                                                       max_restarts=-1).remote()
    return actor, name


def read_stats(actor: Any) -> dict[str, list[float]] | None:
    """The actor's totals, or None when it is gone (statistics are lost, never the run)."""
    import ray

    try:
        return dict(ray.get(actor.snapshot.remote(), timeout=60))
    except (ray.exceptions.RayError, TimeoutError):
        return None


class _Reporting:
    """Reports each batch to the run's stats actor; fire-and-forget (never waits for it)."""

    stats_name: str | None = None
    stage_name: str = ""
    _actor: Any = None

    def _report(self, rows_in: int, rows_out: int, seconds: float) -> None:
        if self.stats_name is None:
            return
        import ray

        if self._actor is None:
            try:
                self._actor = ray.get_actor(self.stats_name)
            except ValueError:
                self.stats_name = None  # the driver is gone: statistics are lost, not the rows
                return
        self._actor.add.remote(self.stage_name, rows_in, rows_out, seconds)


class TaskStage(_Reporting):
    """Picklable task-pool function: builds its stage once per worker process."""

    _cache: dict[tuple[str, str], Stage] = {}

    def __init__(self, name: str, params: dict[str, Any], stats_name: str | None = None) -> None:
        self.name, self.params = name, params
        self.stage_name, self.stats_name = name, stats_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        key = (self.name, json.dumps(self.params, sort_keys=True, default=str))
        stage = self._cache.get(key)
        if stage is None:
            stage = self._cache[key] = get_stage_class(self.name)(self.params)
        t0 = time.perf_counter()
        out = stage(batch)
        self._report(batch.num_rows, out.num_rows, time.perf_counter() - t0)
        return out


class ActorStage(_Reporting):
    """Actor-pool callable: loads its stage (and model) once per actor."""

    def __init__(self, name: str, params: dict[str, Any], stats_name: str | None = None) -> None:
        self.stage = get_stage_class(name)(params)
        self.stage_name, self.stats_name = name, stats_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        out = self.stage(batch)
        self._report(batch.num_rows, out.num_rows, time.perf_counter() - t0)
        return out


def named(base: type, stage_name: str) -> type:
    """A subclass of ``base`` named after the stage (what Ray Data shows)."""
    return type(stage_name, (base,), {"__module__": base.__module__})


def timings_from(snapshot: dict[str, list[float]], order: list[str]) -> list[dict[str, Any]]:
    """Manifest entries in stage order: rows in, rows out, seconds summed over the workers."""
    out = []
    for name in order:
        batches, rows_in, rows_out, seconds = snapshot.get(name, [0, 0, 0, 0.0])
        out.append({"stage": name, "batches": int(batches), "rows_in": int(rows_in), "rows_out": int(rows_out),
                    "seconds": round(float(seconds), 4)})
    return out
