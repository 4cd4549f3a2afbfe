"""``xmodal run``: ingest -> stages (on Ray, or in-process with ``--local``) -> metrics ->
quality gates -> report -> release (local directory, or built locally and uploaded to S3)."""

from __future__ import annotations

import logging
import shutil
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as pads

from access.io import filesystem_for
from pipeline.metrics.release import compute_release_metrics
from pipeline.release.gates import GateError, evaluate_gates, failed, failure_message
from pipeline.release.publish import UploadSettings
from pipeline.release.report import render_report
from pipeline.release.writer import (
    InputFingerprint,
    ReleaseResult,
    check_can_release,
    failed_report_uri,
    reconcile,
    reject_shard_map,
    remove_tree,
    write_failed_report,
    write_release,
)
from pipeline.run.config import RunConfig
from pipeline.run.ingest import fingerprint_input, mark_duplicate_ids
from pipeline.run.versioning import code_version

log = logging.getLogger(__name__)


def read_staging(staging_uri: str) -> pa.Table:
    fs, path = filesystem_for(staging_uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    return dataset.to_table()


def run_config(cfg: RunConfig, *, local: bool = False) -> ReleaseResult:
    """Run the configured stages and publish the release; raises ReleaseError when the release
    cannot be published (GateError when a quality gate fails) and ConfigError for a config that
    cannot run."""
    check_can_release(cfg.release.output, cfg.dataset, cfg.version, cfg.release.overwrite)
    fingerprints = [InputFingerprint(u, *fingerprint_input(u)) for u in cfg.inputs]
    timings: list[tuple[str, int, float]] = []
    t0 = time.perf_counter()
    if local:
        table, timings = run_local(cfg)
    else:
        from pipeline.run.ray_runner import run_stages_on_ray

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
    return release_table(cfg, table, fingerprints, timings)


def run_local(cfg: RunConfig) -> tuple[pa.Table, list[tuple[str, int, float]]]:
    """The configured stages in-process over the inputs: every row, and (stage, rows in,
    seconds) per stage."""
    from pipeline.run.local_runner import read_inputs, run_stages

    stages = [spec.stage_class()(spec.params) for spec in cfg.stages]
    run = run_stages(read_inputs(cfg.inputs, cfg.max_record_bytes), stages)
    return run.table, [(t.name, t.rows_in, t.seconds) for t in run.timings]


def release_table(cfg: RunConfig, table: pa.Table, fingerprints: list[InputFingerprint],
                  timings: list[tuple[str, int, float]]) -> ReleaseResult:
    """Metrics, gates, report and release of the final table (every row, kept and rejected).
    When a gate fails, the report is written under ``<output>/<dataset>/_failed/<version>/``
    and GateError says which gate failed and by how much; nothing is published."""
    counts = reconcile(table, sum(f.records for f in fingerprints))
    t0 = time.perf_counter()
    metrics = compute_release_metrics(table, counts, timings, cfg.metrics)
    results = evaluate_gates(cfg.gates, {**metrics.values, "counts": counts}, metrics.skipped)
    log.info("metrics in %.2fs; %d gate(s), %d failed", time.perf_counter() - t0, len(results), len(failed(results)))
    report = render_report(
        dataset=cfg.dataset, version=cfg.version, counts=counts, table=table, stage_timings=timings,
        metrics=metrics, gates=results, examples_per_code=cfg.metrics.examples_per_code,
        reject_shards=reject_shard_map(table, cfg.release.shard_target_bytes),
    )
    gate_json = [r.to_json() for r in results]
    if failed(results):
        uri = write_failed_report(cfg.release.output, cfg.dataset, cfg.version, report, gate_json)
        raise GateError(failure_message(results, uri))
    rel = cfg.release
    result = write_release(
        table,
        root=rel.output,
        dataset=cfg.dataset,
        version=cfg.version,
        inputs=fingerprints,
        config_hash=cfg.config_hash(),
        code_version=code_version(),
        # A dict with str keys: Mapping[str, int] is invariant in the key, so the config's
        # dict[Literal[...], int] is not one.
        vocab={m: n for m, n in cfg.placeholder_vocab.items()},
        shard_target_bytes=rel.shard_target_bytes,
        jsonl=rel.jsonl,
        overwrite=rel.overwrite,
        report_html=report,
        metrics=metrics.to_json(),
        gates=gate_json,
        stage_timings=timings,
        upload=UploadSettings(multipart_threshold=rel.multipart_threshold_bytes, part_size=rel.multipart_part_bytes,
                              attempts=rel.upload_attempts, backoff_s=rel.upload_backoff_s),
        build_dir=rel.build_dir,
    )
    # A version that now passes its gates no longer has a failed report beside it.
    remove_tree(failed_report_uri(rel.output, cfg.dataset, cfg.version))
    return result
