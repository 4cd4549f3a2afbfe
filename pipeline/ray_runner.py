"""The Ray Data runner: the only module that knows Ray.

It turns a stage list into ``map_batches`` calls: ``batch_format="pyarrow"``, fractional
``num_cpus`` (a 2-core machine never deadlocks its read tasks), ``ActorPoolStrategy`` for stages
that load a model once per actor, and ``mode="overwrite"`` on the staging write so that a re-run
replaces rather than appends. Rows never come back to the driver through Ray: the staged Parquet
files are what the release step reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipeline.config import RunConfig, StageSpec
from stages.base import Resources, Stage
from stages.registry import get_stage_class

log = logging.getLogger(__name__)

FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "HF_HUB_OFFLINE", "XMODAL_MODEL_CACHE",
)


class _ParseManifests:
    """Task: manifest URIs -> ROW_SCHEMA rows (one task per manifest file)."""

    def __init__(self, max_record_bytes: int) -> None:
        self.max_record_bytes = max_record_bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.ingest import read_manifest

        return pa.concat_tables([read_manifest(u, self.max_record_bytes) for u in batch["uri"].to_pylist()])


class _TaskStage:
    """Picklable task-pool function: builds its stage once per worker process."""

    _cache: dict[tuple[str, str], Stage] = {}

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name, self.params = name, params

    def __call__(self, batch: pa.Table) -> pa.Table:
        import json

        key = (self.name, json.dumps(self.params, sort_keys=True, default=str))
        stage = self._cache.get(key)
        if stage is None:
            stage = self._cache[key] = get_stage_class(self.name)(self.params)
        return stage(batch)


def map_batches_kwargs(spec: StageSpec, resources: Resources) -> dict[str, Any]:
    """The ``map_batches`` keywords for one stage (exposed for tests)."""
    from ray.data import ActorPoolStrategy

    kwargs: dict[str, Any] = {
        "batch_format": "pyarrow",
        "batch_size": resources.batch_size,
        "num_cpus": resources.num_cpus,
    }
    if resources.num_gpus:
        kwargs["num_gpus"] = resources.num_gpus
    if resources.memory:
        kwargs["memory"] = resources.memory
    if resources.actors is not None:
        lo, hi = resources.actors
        kwargs["compute"] = ActorPoolStrategy(min_size=lo, max_size=hi)
        kwargs["fn_constructor_kwargs"] = {"params": spec.params}
    return kwargs


def ensure_ray(cfg: RunConfig) -> None:
    """Connect to the configured cluster, or start a local Ray, forwarding S3 settings."""
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, _temp_dir=cfg.ray.temp_dir, **kwargs)


def run_stages_on_ray(cfg: RunConfig, staging_uri: str, stages: Sequence[StageSpec] | None = None) -> None:
    """Ingest the inputs, apply the stages and write every row (kept and rejected) to staging."""
    import ray.data

    from pipeline.io import filesystem_for

    ensure_ray(cfg)
    ds = ray.data.from_items([{"uri": u} for u in cfg.inputs], override_num_blocks=len(cfg.inputs))
    ds = ds.map_batches(_ParseManifests(cfg.max_record_bytes), batch_format="pyarrow", batch_size=1, num_cpus=0.5)
    for spec in cfg.stages if stages is None else stages:
        resources = spec.effective_resources()
        kwargs = map_batches_kwargs(spec, resources)
        fn: Any = spec.stage_class() if resources.actors is not None else _TaskStage(spec.name, spec.params)
        ds = ds.map_batches(fn, **kwargs)
    fs, path = filesystem_for(staging_uri)
    ds.write_parquet(path, filesystem=fs, mode="overwrite")
    log.info("staged %s", staging_uri)
