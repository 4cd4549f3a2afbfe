"""``xmodal run``: ingest -> stages (on Ray, or in-process with ``--local``) -> release."""

from __future__ import annotations

import logging
import shutil
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as pads

from pipeline.config import RunConfig
from pipeline.ingest import fingerprint_input, mark_duplicate_ids
from pipeline.io import filesystem_for
from pipeline.release import InputFingerprint, ReleaseResult, reconcile, write_release
from pipeline.report import render_report
from pipeline.versioning import code_version

log = logging.getLogger(__name__)


def read_staging(staging_uri: str) -> pa.Table:
    fs, path = filesystem_for(staging_uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    return dataset.to_table()


def run_config(cfg: RunConfig, *, local: bool = False) -> ReleaseResult:
    """Run the configured stages and publish the release; raises ReleaseError when the release
    cannot be published and ConfigError for a config that cannot run."""
    fingerprints = [InputFingerprint(u, *fingerprint_input(u)) for u in cfg.inputs]
    timings: list[tuple[str, int, float]] = []
    t0 = time.perf_counter()
    if local:
        from pipeline.local_runner import read_inputs, run_stages

        stages = [spec.stage_class()(spec.params) for spec in cfg.stages]
        run = run_stages(read_inputs(cfg.inputs, cfg.max_record_bytes), stages)
        table = run.table
        timings = [(t.name, t.rows_in, t.seconds) for t in run.timings]
    else:
        from pipeline.ray_runner import run_stages_on_ray

        staging = f"{cfg.release.output.rstrip('/')}/{cfg.dataset}/.staging-{cfg.version}-{uuid.uuid4().hex[:8]}"
        try:
            run_stages_on_ray(cfg, staging)
            table = read_staging(staging)
        finally:
            fs, path = filesystem_for(staging)
            if staging.startswith("s3://"):
                fs.delete_dir_contents(path, missing_dir_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        total_rows = sum(f.records for f in fingerprints)
        timings = [("all stages on Ray", total_rows, time.perf_counter() - t0)]
    table = mark_duplicate_ids(table)
    counts = reconcile(table, sum(f.records for f in fingerprints))
    report = render_report(dataset=cfg.dataset, version=cfg.version, counts=counts, table=table, stage_timings=timings)
    return write_release(
        table,
        root=cfg.release.output,
        dataset=cfg.dataset,
        version=cfg.version,
        inputs=fingerprints,
        config_hash=cfg.config_hash(),
        code_version=code_version(),
        vocab=cfg.placeholder_vocab,
        shard_target_bytes=cfg.release.shard_target_bytes,
        jsonl=cfg.release.jsonl,
        overwrite=cfg.release.overwrite,
        report_html=report,
    )
