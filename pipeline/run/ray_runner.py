"""The Ray Data runner: the only module that knows Ray.

It turns a stage list into ``map_batches`` calls: ``batch_format="pyarrow"``, fractional
``num_cpus`` (a 2-core machine never deadlocks its read tasks), ``ActorPoolStrategy`` for stages
that load a model once per actor, and ``mode="overwrite"`` on checkpoint writes so that a re-run
replaces rather than appends. Rows never come back to the driver through Ray: the last step
(``pipeline.run.ray_runs``) hands every block to the release's ``finalize``, which writes the
sorted runs the release step reads and returns one small summary row.

With a checkpoint root (``checkpoint_uri=`` or the
:func:`pipeline.run.checkpoints.stage_checkpoints` block that nightly builds wrap around
``run_config``) every stage's output is materialised under
``<root>/stages/NN-<stage>-<key>/data/`` with a ``_done.json`` marker written after it, and a
re-run starts from the last stage whose marker is there. ``key`` chains the code version, the
inputs (URI, size, mtime) and every stage spec up to that stage, so a changed config or input
never reuses a stale stage. The price is that stages no longer stream into each other.

With a ``dataset_checks:`` section the stages up to ``after`` are staged first (in a sibling
``.staging-<version>-<hex>`` folder, or their checkpoint), the dataset-level checks read them
(``pipeline.run.dataset_checks``), and the verdicts stream into the stages after ``after``; those
are not checkpointed (a resumed run redoes them).

While a stage writes, a thread logs rows written so far and rows/s every
``XMODAL_PROGRESS_INTERVAL_S`` seconds (default 30): that is what a job's log shows, where Ray
Data's progress bars (a terminal's) are not drawn.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow.fs as pafs

from access.io import filesystem_for, write_bytes
from pipeline.run.blocks import ParseBlocks, plan_blocks
from pipeline.run.checkpoints import (
    StageCheckpoint,
    checkpoint_root,
    count_parquet_rows,
    plan_checkpoints,
)
from pipeline.run.config import RunConfig, StageSpec
from pipeline.run.ray_runs import Finalize, write_runs
from pipeline.run.ray_stages import ActorStage, TaskStage, named, read_stats, start_stats, timings_from
from stages.base import Resources

log = logging.getLogger(__name__)

FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "HF_HUB_OFFLINE", "XMODAL_MODEL_CACHE",
)
# Never put in a runtime_env: Ray writes a runtime_env in plain text to its logs
# (runtime_env_agent.log). A local Ray's workers inherit the driver's environment; a cluster's
# use their own (pod env, instance role) or the file named by ray.s3_credentials_file.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Set by Ray's job manager in a submitted job's driver: the job's own runtime_env.
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
def map_batches_kwargs(spec: StageSpec, resources: Resources, stats_name: str | None = None) -> dict[str, Any]:
    """The ``map_batches`` keywords for one stage (exposed for tests and benchmarks); the callable
    is :func:`stage_callable`'s."""
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
        kwargs["fn_constructor_kwargs"] = {"name": spec.name, "params": spec.params, "stats_name": stats_name}
    return kwargs


def worker_env(cfg: RunConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The env vars the run's runtime_env gives its workers: the driver's S3 and model settings
    without credentials (``CREDENTIAL_ENV``), and ``AWS_SHARED_CREDENTIALS_FILE`` when the config
    names a credentials file (its path, never its contents)."""
    env = {k: environ[k] for k in FORWARDED_ENV if k in environ and k not in CREDENTIAL_ENV}
    if cfg.ray.s3_credentials_file:
        env["AWS_SHARED_CREDENTIALS_FILE"] = cfg.ray.s3_credentials_file
    return env


def ensure_ray(cfg: RunConfig) -> None:
    """Connect to the configured cluster, or start a local Ray, forwarding S3 settings (never
    credentials: :func:`worker_env`). A local Ray gets a temp dir of its own and explicit
    token auth (:mod:`pipeline.run.local_ray`)."""
    import ray

    from pipeline.run import local_ray

    if ray.is_initialized():
        return
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")) and local_ray.prepare_auth(os.environ):
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")  # Ray read RAY_AUTH_MODE at import; re-read it, as Ray itself does
        AuthenticationTokenLoader.instance().reset_cache()
    env = worker_env(cfg, os.environ)
    if _JOB_CONFIG_ENV in os.environ:
        # In a submitted job the job's runtime_env already carries its env vars to the workers,
        # and Ray refuses a driver runtime_env that names the same keys again.
        job_env = json.loads(os.environ[_JOB_CONFIG_ENV]).get("runtime_env", {}).get("env_vars", {})
        env = {k: v for k, v in env.items() if k not in job_env}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    # RAY_ADDRESS is how a submitted job's driver (and ``ray.init()`` anywhere) finds its cluster.
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False,
                 _temp_dir=local_ray.run_temp_dir(cfg.ray.temp_dir), **kwargs)


STAGED_ROWS_PER_FILE = 2000


def progress_interval_s() -> float:
    return float(os.environ.get("XMODAL_PROGRESS_INTERVAL_S", "30"))


def _write_stage(ds: Any, uri: str, label: str, progress: Callable[[], str] | None = None) -> int:
    """Execute ``ds`` into Parquet under ``uri`` while a thread logs rows written and rows/s;
    return the rows written."""
    fs, path = filesystem_for(uri)
    seen: dict[str, int] = {}
    stop = threading.Event()
    t0 = time.perf_counter()

    def report() -> None:
        while not stop.wait(progress_interval_s()):
            rows, elapsed = count_parquet_rows(uri, seen), time.perf_counter() - t0
            log.info("stage %s: %d rows written, %.1f rows/s, %.0f s%s", label, rows, rows / elapsed, elapsed,
                     f"; per stage out/in: {progress()}" if progress else "")

    thread = threading.Thread(target=report, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        # at least STAGED_ROWS_PER_FILE rows a file: stages with small batches (segment_checks:
        # 8 rows) would write a file per batch, and every later read of the staging would plan
        # (and the driver keep) a footer per file: 12,500 files and ~600 MB per read at 100 k records
        ds.write_parquet(path, filesystem=fs, mode="overwrite", min_rows_per_file=STAGED_ROWS_PER_FILE)
    finally:
        stop.set()
        thread.join()
    rows, elapsed = count_parquet_rows(uri, seen), time.perf_counter() - t0
    log.info("stage %s done: %d rows in %.1f s (%.1f rows/s)", label, rows, elapsed, rows / max(elapsed, 1e-9))
    return rows


def _ingest(cfg: RunConfig) -> Any:
    import ray.data

    blocks = [b.to_json() for u in cfg.inputs for b in plan_blocks(u, cfg.ray.lines_per_block)]
    log.info("ingest: %d manifest(s) in %d block(s)", len(cfg.inputs), len(blocks))
    ds = ray.data.from_items(blocks, override_num_blocks=len(blocks))
    # A task per block: fused with the first stage, ingest would take that stage's batch size
    # (e.g. 256) as its input bundle, so every block description of a manifest went into ONE
    # task and one output block, and every later stage ran on one core. A concurrency of its
    # own (a different compute strategy) keeps ingest from fusing.
    return ds.map_batches(named(ParseBlocks, "ingest")(cfg.max_record_bytes, cfg.media_roots), batch_format="pyarrow",
                          batch_size=1, num_cpus=0.5, concurrency=max(1, len(blocks)))


def stage_callable(spec: StageSpec, stats_name: str | None = None) -> Any:
    """The ``map_batches`` callable of one stage, named after it: the class for an actor pool
    (its constructor keywords are in :func:`map_batches_kwargs`), an instance for a task pool."""
    if spec.effective_resources().actors is not None:
        return named(ActorStage, spec.name)
    return named(TaskStage, spec.name)(spec.name, spec.params, stats_name)


def _apply(ds: Any, spec: StageSpec, stats_name: str | None = None) -> Any:
    kwargs = map_batches_kwargs(spec, spec.effective_resources(), stats_name)
    return ds.map_batches(stage_callable(spec, stats_name), **kwargs)


def run_checkpointed(cfg: RunConfig, root_uri: str, stages: Sequence[StageSpec],
                     stats_name: str | None = None) -> StageCheckpoint:
    """Run ingest and every stage, one materialised step at a time, starting after the last step
    whose marker exists under ``root_uri``; return the last step's checkpoint."""
    import ray.data

    plan = plan_checkpoints(cfg, root_uri, stages)
    done = max((c.index for c in plan if c.is_done()), default=-1)
    if done >= 0:
        log.info("resuming after step %d/%d (%s): its output is checkpointed", done, len(plan) - 1, plan[done].name)
    for step in plan[done + 1:]:
        if step.index == 0:
            ds = _ingest(cfg)
        else:
            fs, path = filesystem_for(plan[step.index - 1].data_uri)
            ds = _apply(ray.data.read_parquet(path, filesystem=fs), stages[step.index - 1], stats_name)
        t0 = time.perf_counter()
        rows = _write_stage(ds, step.data_uri, f"{step.index}/{len(plan) - 1} {step.name}")
        # The marker goes last: a step killed while writing has none and is redone whole.
        marker = {"step": step.name, "rows": rows, "seconds": round(time.perf_counter() - t0, 3)}
        write_bytes(step.marker_uri, json.dumps(marker, sort_keys=True).encode())
    return plan[-1]


def _checked(p: Any, before_uri: str, rest: Sequence[StageSpec], stats_name: str | None) -> tuple[Any, dict[str, Any]]:
    """The rows staged under ``before_uri`` with the dataset-level verdicts applied, then the
    stages ``rest``, lazily; and the checks' timing entry (the verdicts are computed here)."""
    import ray.data

    from pipeline.run.dataset_checks import checks_timing, dataset_checks_on_ray

    fs, path = filesystem_for(before_uri)
    t0 = time.perf_counter()
    ds, summary = dataset_checks_on_ray(ray.data.read_parquet(path, filesystem=fs), p)
    timing = checks_timing(count_parquet_rows(before_uri), time.perf_counter() - t0, summary)
    for spec in rest:
        ds = _apply(ds, spec, stats_name)
    return ds, timing


def run_stages_on_ray(
    cfg: RunConfig, finalize: Finalize, on_summary: Callable[[Any], None], rows_per_run: int,
    stages: Sequence[StageSpec] | None = None, *, checkpoint_uri: str | None = None, work_uri: str,
) -> list[dict[str, Any]]:
    """Ingest the inputs, apply the stages and hand every row (kept and rejected) to ``finalize``
    on the workers (``pipeline.run.ray_runs``), its summaries to ``on_summary``; return each
    stage's rows in, rows out and seconds (summed over the workers). ``work_uri``: a folder of
    the run's own, beside which the rows before the dataset checks are staged.

    Without a checkpoint root (the argument, or an enclosing :func:`stage_checkpoints`) the
    stages stream into each other in one Ray Data execution; with one, each is materialised and
    a re-run resumes after the last completed stage (module docstring)."""
    import ray
    import ray.data

    ensure_ray(cfg)
    specs = list(cfg.stages if stages is None else stages)
    root = checkpoint_uri or checkpoint_root()
    actor, stats_name = start_stats(uuid.uuid4().hex[:12])
    order = [s.name for s in specs]

    def progress() -> str:
        snap = read_stats(actor)
        if snap is None:
            return "unavailable"
        return ", ".join(f"{n} {int(snap[n][2])}/{int(snap[n][1])}" for n in order if n in snap)

    from pipeline.run.dataset_checks import split_at_after

    checks, split, checked = cfg.dataset_checks, split_at_after(order, cfg.dataset_checks), None
    before = f"{work_uri.rstrip('/').rsplit('/', 1)[0]}/.staging-{cfg.version}-{uuid.uuid4().hex[:8]}"

    def finish(ds: Any, label: str) -> None:
        write_runs(ds, finalize, on_summary, rows_per_run, label, progress_interval_s(), progress)

    try:
        if root is None:
            ds = _ingest(cfg)
            for spec in specs[:split]:
                ds = _apply(ds, spec, stats_name)
            if checks is not None:
                _write_stage(ds, before, f"stages up to {checks.after}", progress)
                ds, checked = _checked(checks, before, specs[split:], stats_name)
            finish(ds, "all stages")
        else:
            last = run_checkpointed(cfg, root, specs[:split], stats_name)
            if checks is None:
                fs, path = filesystem_for(last.data_uri)
                finish(ray.data.read_parquet(path, filesystem=fs), "the checkpointed rows")
            else:
                ds, checked = _checked(checks, last.data_uri, specs[split:], stats_name)
                finish(ds, "dataset checks and the stages after them")
        snap = read_stats(actor)
        if snap is None:
            log.warning("per-stage statistics were lost (their actor died); the rows are all staged")
        timings = timings_from(snap, order) if snap is not None else []
        if checked is not None:
            timings.insert(min(split, len(timings)), checked)
    finally:
        try:
            ray.kill(actor)
        except ray.exceptions.RayError:
            pass
        fs, path = filesystem_for(before)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    for t in timings:
        log.info("stage %s: %d rows in, %d out, %.1f s in the stage", t["stage"], t["rows_in"], t["rows_out"],
                 t["seconds"])
    return timings
