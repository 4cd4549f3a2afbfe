"""The staged rows of a Ray run as a release's row source: the work runs on Ray workers.

Implements ``pipeline.release.source.RowSource`` (by shape; this module does not import the
release): ``map_blocks`` is a ``map_batches`` whose small results stream back, duplicate ids a
``groupby("id")`` over four narrow columns, and the sorted stream a Ray Data ``sort`` (range
partitioned on workers) read back batch by batch, so the driver holds one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from access.io import filesystem_for
from schemas.records import STATUS_OK

BlockFn = Callable[[pa.Table], pa.Table]
NUM_CPUS = 0.5  # fractional: a 2-core machine never deadlocks its read tasks


class _Named:
    """A block function under the name Ray Data shows for its operator."""

    def __init__(self, fn: BlockFn) -> None:
        self.fn = fn

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.fn(batch)


def _named(name: str, fn: BlockFn) -> Any:
    return type(name, (_Named,), {})(fn)


def _keep_ok(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.fill_null(pc.equal(batch["status"], STATUS_OK), False))


def _repeated(group: pa.Table) -> pa.Table:
    return group if group.num_rows > 1 else group.slice(0, 0)


def _partitions() -> int:
    """A few shuffle partitions per CPU: Ray's default (200) costs ~30 s of fixed overhead on 2 cores."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


class RaySource:
    def __init__(self, staging_uri: str, batch_rows: int = 8192) -> None:
        self.staging_uri = staging_uri
        self.batch_rows = batch_rows

    def _read(self, columns: Sequence[str] | None = None) -> Any:
        import ray.data

        fs, path = filesystem_for(self.staging_uri)
        ds = ray.data.read_parquet(path, filesystem=fs)
        return ds.select_columns(list(columns)) if columns else ds

    def map_blocks(self, fn: BlockFn) -> Iterator[pa.Table]:
        ds = self._read().map_batches(_named("release_checks", fn), batch_format="pyarrow", batch_size=None,
                                      num_cpus=NUM_CPUS)
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)

    def duplicate_candidates(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        ds = self._read(columns).map_batches(_named("release_ok_ids", _keep_ok), batch_format="pyarrow",
                                             batch_size=None, num_cpus=NUM_CPUS)
        grouped = ds.groupby("id", num_partitions=_partitions()).map_groups(_repeated, batch_format="pyarrow",
                                                                         num_cpus=NUM_CPUS)
        for batch in grouped.iter_batches(batch_format="pyarrow", batch_size=None):
            if batch.num_rows:
                yield batch

    def sorted_batches(self, prepare: BlockFn, keys: Sequence[str]) -> Iterator[pa.Table]:
        # The sort's partition count comes from the context when Ray cannot estimate the input's
        # blocks (a Parquet folder): the same few partitions per CPU. A dataset copies the
        # context when it is created, so it is set before the read.
        from ray.data import DataContext

        ctx = DataContext.get_current()
        saved = ctx.default_hash_shuffle_parallelism
        ctx.default_hash_shuffle_parallelism = _partitions()
        try:
            ds = self._read().map_batches(_named("release_prepare", prepare), batch_format="pyarrow",
                                          batch_size=None, num_cpus=NUM_CPUS).sort(list(keys))
        finally:
            ctx.default_hash_shuffle_parallelism = saved
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=self.batch_rows)
