"""A PyTorch ``IterableDataset`` over a release (local or s3://), and the Ray Data path.

Every row's placeholder spans are checked against its media refs (grammar v1,
``PlaceholderLinter``) before it is yielded; with ``decode_images`` its images are also read,
decoded and compared with the refs' width and height. A malformed row raises
:class:`MalformedSampleError` naming the shard and the id (``on_error="raise"``), or is skipped,
logged and counted (``on_error="skip"``). Shard integrity (rows, sha256) is checked against
``manifest.json`` (see :mod:`pipeline.training.release_shards`). Media refs are resolved against
the folder the release was opened from (``pipeline.release.portable.resolve_media_uri``), so a
release copied elsewhere with its ``media/`` (``release.media: copy``) opens its images there;
embedded bytes (``media_bytes``) are decoded without reading a file.

Splitting: the shards' rows are concatenated (in a per-epoch shard order shared by every
consumer) and cut into ``world_size * num_workers`` contiguous ranges that differ by at most one
row, so every kept row is yielded exactly once per epoch across ranks and DataLoader workers, and
each consumer reads only the shards its range touches. For training on Ray, :func:`ray_dataset`
gives a ``ray.data.Dataset`` of checked rows for ``iter_torch_batches``.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from access.io import read_bytes
from pipeline.release.portable import BYTES_COLUMN, resolve_media_column
from pipeline.training.release_shards import (
    MalformedSampleError,
    OnError,
    ReleaseIndex,
    ReleaseReadError,
    ShardEntry,
    ShardIntegrityError,
    open_release,
    partition_rows,
    ray_dataset,
    read_shard,
)
from schemas.placeholders import PlaceholderLinter
from schemas.records import MediaRef

__all__ = [
    "MalformedSampleError", "ReleaseDataset", "ReleaseIndex", "ReleaseReadError", "Sample", "ShardEntry",
    "ShardIntegrityError", "consumer_identity", "decode_image", "load_images", "open_release", "partition_rows",
    "ray_dataset", "read_shard", "shuffle_buffer",
]

log = logging.getLogger(__name__)

SKIP_CATEGORIES = ("placeholder", "media")


def consumer_identity(rank: int | None = None, world_size: int | None = None) -> tuple[int, int, int, int]:
    """``(rank, world_size, worker id, num workers)``: explicit values first, then an initialised
    ``torch.distributed``, then the ``RANK``/``WORLD_SIZE`` environment, else one process."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = get_worker_info()
    return rank, world_size, (info.id if info else 0), (info.num_workers if info else 1)


@dataclass(frozen=True)
class Sample:
    """One checked release row. ``row`` holds every column as Python values; ``images`` holds the
    decoded RGB ``uint8`` HxWx3 arrays of the image refs, in order, when ``decode_images`` is on."""

    id: str
    kind: str
    content: str
    media: tuple[MediaRef, ...]
    captions: tuple[str, ...]
    shard: str
    row: Mapping[str, Any]
    images: tuple[np.ndarray, ...] = ()


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 HxWx3; raises ValueError when they do not decode."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("image does not decode")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load_images(refs: Sequence[MediaRef], *, verify_sha256: bool = False,
                embedded: Sequence[bytes | None] | None = None) -> tuple[np.ndarray, ...]:
    """Read and decode a row's image refs; raises ValueError naming the ref on any mismatch.
    ``embedded``: the row's ``media_bytes`` (one per ref, in the order of ``refs``) of a release
    built with ``release.media: embed``; the refs' uris are read otherwise (resolved against the
    release: :class:`ReleaseDataset` resolves them)."""
    images = []
    image_refs = [(i, r) for i, r in enumerate(refs) if r.modality == "image"]
    for k, (i, ref) in enumerate(image_refs):
        try:
            blob = embedded[i] if embedded is not None and i < len(embedded) else None
            data = bytes(blob) if blob is not None else read_bytes(ref.uri)
        except OSError as exc:
            raise ValueError(f"image {k + 1} {ref.uri}: cannot read ({exc.__class__.__name__})") from None
        if verify_sha256 and ref.sha256 and hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ValueError(f"image {k + 1} {ref.uri}: sha256 differs from the media ref")
        try:
            image = decode_image(data)
        except ValueError:
            raise ValueError(f"image {k + 1} {ref.uri}: does not decode") from None
        h, w = image.shape[:2]
        if (ref.width is not None and ref.width != w) or (ref.height is not None and ref.height != h):
            raise ValueError(f"image {k + 1} {ref.uri}: {w}x{h}, the media ref says {ref.width}x{ref.height}")
        images.append(image)
    return tuple(images)


def shuffle_buffer(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield ``items`` through a buffer of ``size``: each arrival replaces a random buffered one."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class ReleaseDataset(IterableDataset):
    """Checked samples of a release (local path or s3://), split by rank and DataLoader worker.

    ``vocab`` sizes the token check (default: the manifest's ``placeholder_vocab``, else 8192).
    ``where`` selects samples (e.g. a train/held-out split by id) once their placeholders pass and
    before their images are read; ``transform`` maps each :class:`Sample` to what the DataLoader
    collates (tensors). Skipped rows are counted in shared memory, so :attr:`skipped` is exact
    across the DataLoader workers of this process; each rank counts its own. Ranks may get one row
    more or less than each other (and skips differ): under DDP, end an epoch with ``Join`` or a
    fixed number of steps.
    """

    release_uri: str
    kinds: Sequence[str] | None = None
    transform: Callable[[Sample], Any] | None = None
    where: Callable[[Sample], bool] | None = None
    on_error: OnError = "raise"
    verify_sha256: bool = False
    decode_images: bool = False
    verify_media_sha256: bool = False
    shuffle: bool = False
    shuffle_buffer_size: int = 1024
    seed: int = 0
    rank: int | None = None
    world_size: int | None = None
    vocab: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {self.on_error!r}")
        self.index = open_release(self.release_uri)
        self.shards = self.index.select(self.kinds)
        self.vocab = self.index.vocab(self.vocab)
        self.epoch = 0
        self._skips = mp.Array("q", len(SKIP_CATEGORIES))  # shared with forked/spawned workers

    @property
    def num_rows(self) -> int:
        """Rows the manifest lists for the selected kinds (before any skip)."""
        return sum(s.rows for s in self.shards)

    @property
    def skipped(self) -> dict[str, int]:
        """Rows skipped so far, by category (``placeholder``, ``media``)."""
        with self._skips.get_lock():
            return dict(zip(SKIP_CATEGORIES, self._skips[:], strict=True))

    def set_epoch(self, epoch: int) -> None:
        """Changes the shard order and the shuffle; call it before each epoch when shuffling."""
        self.epoch = epoch

    def _shard_order(self) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(order)
        return order

    def __iter__(self) -> Iterator[Any]:
        rank, world, worker, workers = consumer_identity(self.rank, self.world_size)
        part, parts = rank * workers + worker, world * workers
        order = self._shard_order()
        pieces = partition_rows([self.shards[i].rows for i in order], part, parts)
        samples = self._samples([(order[i], start, stop) for i, start, stop in pieces])
        if self.shuffle and self.shuffle_buffer_size > 1:
            rng = random.Random(f"{self.seed}:{self.epoch}:{part}")
            samples = shuffle_buffer(samples, self.shuffle_buffer_size, rng)
        for sample in samples:
            if self.decode_images:  # after the buffer, which then holds no pixels
                try:
                    images = load_images(sample.media, verify_sha256=self.verify_media_sha256,
                                         embedded=sample.row.get(BYTES_COLUMN))
                except ValueError as exc:
                    self._fail(MalformedSampleError(sample.shard, sample.id, "media", str(exc)))
                    continue
                sample = replace(sample, images=images)
            yield self.transform(sample) if self.transform is not None else sample

    def _samples(self, pieces: Sequence[tuple[int, int, int]]) -> Iterator[Sample]:
        """Rows of the pieces whose placeholders pass, as samples without pixels, ``where`` applied."""
        assert self.vocab is not None  # resolved in __post_init__
        linter = PlaceholderLinter(self.vocab)
        for shard_index, start, stop in pieces:
            shard = self.shards[shard_index]
            table = read_shard(shard, verify_sha256=self.verify_sha256).slice(start, stop - start)
            table = resolve_media_column(table, self.index.uri)  # refs relative to the release
            verdicts = linter.check_columns(table["content"], table["media"], table["kind"])
            for row, verdict in zip(table.to_pylist(), verdicts, strict=True):
                if verdict is not None:
                    rule, detail = f"placeholder/{verdict.rule}", verdict.detail
                    self._fail(MalformedSampleError(shard.uri, row["id"], rule, detail))
                    continue
                refs = row["media"] or []
                media = tuple(MediaRef.model_validate({k: v for k, v in m.items() if v is not None}) for m in refs)
                sample = Sample(row["id"], row["kind"], row["content"], media, tuple(row.get("captions") or ()),
                                shard.uri, row)
                if self.where is None or self.where(sample):
                    yield sample

    def _fail(self, exc: MalformedSampleError) -> None:
        if self.on_error == "raise":
            raise exc
        category = exc.rule.split("/", 1)[0]
        with self._skips.get_lock():
            self._skips[SKIP_CATEGORIES.index(category)] += 1
        log.warning("skipped %s", exc)
