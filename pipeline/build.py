"""``xmodal run``: ingest -> stages (on Ray, or in-process with ``--local``) -> checks and metrics
gathered block by block -> quality gates -> shards streamed into the release -> report ->
manifest (local directory, or built locally and uploaded to S3).

Both runners end in the same release code (``pipeline.release.stream``): on Ray its per-block
work runs on the workers as the rows leave the last stage, and the driver merges the sorted runs
they write (``pipeline.release.runs``); in-process over the table.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from access.io import filesystem_for
from pipeline.release.gates import GateError, evaluate_gates, failed, failure_message
from pipeline.release.leftovers import remove_leftovers
from pipeline.release.partials import CountsError
from pipeline.release.publish import UploadSettings
from pipeline.release.report import render_report
from pipeline.release.report_dataset_checks import dataset_checks_sections
from pipeline.release.runs import RunCollector, RunMaker, rows_per_run
from pipeline.release.source import RowSource, TableSource
from pipeline.release.stream import gather
from pipeline.release.writer import (
    InputFingerprint,
    ReleaseError,
    ReleaseResult,
    check_can_release,
    failed_report_uri,
    remove_tree,
    write_failed_report,
    write_release_stream,
)
from pipeline.run.config import RunConfig
from pipeline.run.ingest import fingerprint_input
from pipeline.run.versioning import code_version

log = logging.getLogger(__name__)

Timing = dict[str, Any]  # {"stage", "rows_in", "rows_out", "seconds"}


def run_config(cfg: RunConfig, *, local: bool = False) -> ReleaseResult:
    """Run the configured stages and publish the release; raises ReleaseError when the release
    cannot be published (GateError when a quality gate fails) and ConfigError for a config that
    cannot run."""
    check_can_release(cfg.release.output, cfg.dataset, cfg.version, cfg.release.overwrite)
    remove_leftovers(cfg.release.output, cfg.dataset, cfg.version)  # of a killed run of this version
    fingerprints = [InputFingerprint(u, *fingerprint_input(u)) for u in cfg.inputs]
    if local:
        table, timings = run_local(cfg)
        return release_source(cfg, TableSource(table), fingerprints, timings)
    from pipeline.run.ray_runner import run_stages_on_ray

    staging = f"{cfg.release.output.rstrip('/')}/{cfg.dataset}/.staging-{cfg.version}-{uuid.uuid4().hex[:8]}"
    try:
        # the release's per-block work runs on the workers as the rows leave the last stage
        # (pipeline.release.runs); the driver merges the partials as they arrive
        collector = RunCollector(cfg.metrics.examples_per_code)
        maker = RunMaker(staging, _vocab(cfg), cfg.metrics.examples_per_code, cfg.metrics, cfg.metrics.sample_seed)
        per_run = rows_per_run(sum(f.records for f in fingerprints), cfg.ray.num_cpus or os.cpu_count() or 1)
        timings = run_stages_on_ray(cfg, maker, collector, per_run, work_uri=staging)
        timings.append(collector.timing())
        return release_source(cfg, collector.source(staging), fingerprints, timings)
    finally:
        fs, path = filesystem_for(staging)
        if staging.startswith("s3://"):
            fs.delete_dir_contents(path, missing_dir_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_local(cfg: RunConfig) -> tuple[pa.Table, list[Timing]]:
    """The configured stages in-process over the inputs (with the dataset-level checks after the
    stage ``dataset_checks.after`` names): every row, and each stage's rows in, rows out and seconds."""
    from pipeline.run.dataset_checks import run_stages_checked
    from pipeline.run.local_runner import read_inputs

    stages = [spec.stage_class()(spec.params) for spec in cfg.stages]
    rows = read_inputs(cfg.inputs, cfg.max_record_bytes, media_roots=cfg.media_roots)
    return run_stages_checked(rows, stages, cfg.dataset_checks)


def _vocab(cfg: RunConfig) -> dict[str, int]:
    return {str(m): n for m, n in cfg.placeholder_vocab.items()}


def _tuples(timings: Sequence[Any]) -> list[tuple[str, int, float]]:
    out = []
    for t in timings:
        out.append((t["stage"], int(t["rows_in"]), float(t["seconds"])) if isinstance(t, Mapping) else tuple(t))
    return out


def release_table(cfg: RunConfig, table: pa.Table, fingerprints: list[InputFingerprint],
                  timings: Sequence[Any]) -> ReleaseResult:
    """The release of an in-process table (every row, kept and rejected)."""
    return release_source(cfg, TableSource(table), fingerprints, timings)


def release_source(cfg: RunConfig, source: RowSource, fingerprints: list[InputFingerprint],
                   timings: Sequence[Any]) -> ReleaseResult:
    """Checks and metrics, gates, report and release of the staged rows. When a gate fails, the
    report is written under ``<output>/<dataset>/_failed/<version>/`` and GateError says which
    gate failed and by how much; nothing is published."""
    vocab = _vocab(cfg)
    t0 = time.perf_counter()
    gathered = gather(source, cfg.inputs, vocab, per_code=cfg.metrics.examples_per_code,
                      metrics_cfg=cfg.metrics, seed=cfg.metrics.sample_seed)
    partial = gathered.partial
    try:
        counts = partial.counts(sum(f.records for f in fingerprints))
    except CountsError as err:
        raise ReleaseError(str(err)) from None
    stage_timings = _tuples(timings)
    assert partial.metrics is not None
    metrics = partial.metrics.finish(counts, stage_timings)
    results = evaluate_gates(cfg.gates, {**metrics.values, "counts": counts}, metrics.skipped)
    log.info("checks and metrics in %.2fs; %d gate(s), %d failed", time.perf_counter() - t0, len(results),
             len(failed(results)))
    examples = partial.examples

    def report(shard_of: Mapping[str, str]) -> str:
        return render_report(dataset=cfg.dataset, version=cfg.version, counts=counts, examples=examples,
                             stage_timings=list(timings), metrics=metrics, gates=results,
                             examples_per_code=cfg.metrics.examples_per_code, reject_shards=shard_of,
                             sections=dataset_checks_sections(timings))

    gate_json = [r.to_json() for r in results]
    if failed(results):
        uri = write_failed_report(cfg.release.output, cfg.dataset, cfg.version, report({}), gate_json)
        raise GateError(failure_message(results, uri))
    rel = cfg.release
    result = write_release_stream(
        source,
        gathered,
        root=rel.output,
        dataset=cfg.dataset,
        version=cfg.version,
        inputs=fingerprints,
        config_hash=cfg.config_hash(),
        code_version=code_version(),
        vocab=vocab,
        shard_target_bytes=rel.shard_target_bytes,
        jsonl=rel.jsonl,
        overwrite=rel.overwrite,
        report_html=report,
        report_ids=examples["id"].to_pylist() if examples is not None else [],
        metrics=metrics.to_json(),
        gates=gate_json,
        stage_timings=list(timings),
        upload=UploadSettings(multipart_threshold=rel.multipart_threshold_bytes, part_size=rel.multipart_part_bytes,
                              attempts=rel.upload_attempts, backoff_s=rel.upload_backoff_s),
        build_dir=rel.build_dir,
        media=rel.media,
        extra={"release_seconds": {k: round(v, 3) for k, v in gathered.seconds.items()}},
    )
    # A version that now passes its gates no longer has a failed report beside it.
    remove_tree(failed_report_uri(rel.output, cfg.dataset, cfg.version))
    result.seconds = {**gathered.seconds, "release": time.perf_counter() - t0}
    log.info("release step: %.1fs (%s)", result.seconds["release"],
             ", ".join(f"{k} {v:.1f}s" for k, v in gathered.seconds.items()))
    return result
