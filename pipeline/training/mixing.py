"""Mixing: draw a training mix from named pools to target proportions, by samples or by tokens.

Mixing sees a whole dataset, not a batch, so it is not a stage: :func:`mix_pools` is a pure
function over one Arrow table per pool (numpy, deterministic for a seed), and ``xmodal mix
CONFIG`` (:mod:`pipeline.training.mix_command`) reads the pools, calls it and writes
``OUT/data/mix-00000.parquet`` … and ``OUT/mix.json`` (written last). Its ``mixing`` entry is
what a release manifest records.

Per pool: the target is ``share x total`` rows (``unit: samples``, counts by largest
remainder so that they sum to ``total``) or tokens (``unit: tokens``: the shortest prefix of a
seeded permutation whose token sum is nearest the target). A pool too small for its target is a
:class:`MixError`, unless the pool says ``upsample: true``: then it is taken whole as many times
as fit, plus a seeded draw for the rest, and the factor is recorded. Without ``total`` the mix is
the largest one that needs no up-sampling. Each pool draws from its own stream
``(seed, crc32(name))``, so adding a pool does not change what the others draw. Rows gain
``mix_pool`` and ``mix_copy`` (0 for a row's first copy); the result is shuffled (``shuffle``).

Documents that ``document_interleave`` split into windows appear as the whole document
(``doc_windows`` > 1, ``doc_window`` null) and as its windows; the whole one is left out
(``drop_windowed_parents``) so that no text is counted twice.

Config (YAML; the mapping itself or under a top-level ``mix:`` key)::

    mix:
      seed: 0
      unit: samples            # or tokens
      total: 100000            # optional
      tokenizer: whitespace    # tokens: markers count 1, text by this tokenizer (or token_column)
      output: out/mix/demo
      pools:
        text_retention: {share: 0.3, inputs: [out/releases/sample-world/demo/data/text-*.parquet]}
        coarse_image_text: {share: 0.4, inputs: [out/releases/sample-world/demo/data/object-*.parquet]}
        interleaved: {share: 0.2, inputs: [out/releases/sample-world/demo/data/document-*.parquet]}
        synthetic_dialogue: {share: 0.1, inputs: [dialogue/], upsample: true}

Imports of numpy, pyarrow and pydantic stay inside functions: the CLI imports this module
(through ``mix_command``) to build ``xmodal --help``. The config types are plain dataclasses
that pydantic validates.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Ge, Gt, Le

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

SHARE_SUM_TOLERANCE = 1e-6


class MixError(ValueError):
    """A mix that cannot be drawn as configured; the message says which pool and why."""


@dataclass(frozen=True)
class PoolSpec:
    """One named pool: its target share and where its rows are."""

    __pydantic_config__ = {"extra": "forbid"}
    share: Annotated[float, Gt(0), Le(1)]
    inputs: list[str] = field(default_factory=list)  # .parquet/.jsonl files, directories, globs
    upsample: bool = False


@dataclass(frozen=True)
class MixSpec:
    """A whole mix; see the module docstring for the YAML form."""

    __pydantic_config__ = {"extra": "forbid"}
    pools: dict[str, PoolSpec]
    unit: Literal["samples", "tokens"] = "samples"
    total: Annotated[int, Gt(0)] | None = None
    seed: Annotated[int, Ge(0)] = 0
    tokenizer: str = "whitespace"
    token_column: str | None = None
    shuffle: bool = True
    drop_windowed_parents: bool = True
    output: str | None = None


@dataclass
class MixResult:
    table: pa.Table
    report: dict[str, Any]  # the release manifest's "mixing" entry


def parse_mix_spec(data: Mapping[str, Any]) -> MixSpec:
    """Validate a config mapping (the mix itself or ``{"mix": ...}``); errors name the key."""
    from pydantic import TypeAdapter, ValidationError

    if isinstance(data, Mapping) and set(data) == {"mix"}:
        data = data["mix"]
    try:
        spec = TypeAdapter(MixSpec).validate_python(data)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or 'mix'}: {e['msg']}" for e in err.errors()]
        raise MixError("\n".join(lines)) from None
    if not spec.pools:
        raise MixError("pools: at least one pool is needed")
    total_share = sum(p.share for p in spec.pools.values())
    if abs(total_share - 1.0) > SHARE_SUM_TOLERANCE:
        raise MixError(f"pools: shares sum to {total_share:.6g}, not 1")
    return spec


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to ``shares`` that sum to ``total`` exactly."""
    import numpy as np

    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def draw_pool(weights: np.ndarray, target: float, rng: np.random.Generator, by_tokens: bool) -> np.ndarray:
    """Row indices (repeats allowed) whose weight sum hits ``target``: whole copies of the pool
    while they fit, then a prefix of a seeded permutation (nearest prefix sum for tokens)."""
    import numpy as np

    n, available = len(weights), float(weights.sum())
    if n == 0 or target <= 0 or available <= 0:
        return np.zeros(0, np.int64)
    copies = int(target // available)
    rest = target - copies * available
    perm = rng.permutation(n)
    if by_tokens:
        sums = np.cumsum(weights[perm])
        k = int(np.searchsorted(sums, rest, side="left"))  # sums[k] is the first sum >= rest
        if k < n and abs(sums[k] - rest) < abs((sums[k - 1] if k else 0) - rest):
            k += 1  # the prefix that ends with row k is nearer the target than the one before
    else:
        k = int(round(rest))
    return np.concatenate([np.tile(np.arange(n), copies), perm[:k]]).astype(np.int64)


def mix_pools(
    pools: Mapping[str, pa.Table], spec: MixSpec, tokens: Mapping[str, np.ndarray] | None = None
) -> MixResult:
    """Draw the mix from one table per pool (``spec.pools`` names them). ``tokens`` gives each
    pool's per-row token counts; without it they are read from ``spec.token_column`` or, when
    the unit is tokens, counted from ``content`` (token fields of the report are null otherwise)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    names = list(spec.pools)
    missing = [n for n in names if n not in pools]
    if missing:
        raise MixError(f"no rows given for pool(s) {missing}")
    tables: dict[str, pa.Table] = {}
    excluded: dict[str, int] = {}
    token_counts: dict[str, np.ndarray | None] = {}
    for name in names:
        table = pools[name]
        keep = np.ones(table.num_rows, dtype=bool)
        if spec.drop_windowed_parents and {"doc_windows", "doc_window"} <= set(table.column_names):
            parent = pc.and_(pc.greater(table["doc_windows"], 1), pc.is_null(table["doc_window"]))
            keep = ~pc.fill_null(parent, False).to_numpy(zero_copy_only=False)
            table = table.filter(pa.array(keep))
        excluded[name] = pools[name].num_rows - table.num_rows
        tables[name] = table
        given = tokens.get(name) if tokens else None
        if given is not None:
            token_counts[name] = np.asarray(given, np.int64)[keep]
        elif spec.unit == "tokens" or spec.token_column:  # counting is the costly part: only when asked
            token_counts[name] = _count_tokens(table, spec)
        else:
            token_counts[name] = None
    by_tokens = spec.unit == "tokens"
    if by_tokens and any(token_counts[n] is None for n in names):
        lacking = [n for n in names if token_counts[n] is None]
        raise MixError(f"unit tokens: pool(s) {lacking} have no {spec.token_column or 'content'} column")
    weights: dict[str, np.ndarray] = {
        n: (counts if by_tokens and counts is not None else np.ones(tables[n].num_rows, np.int64))
        for n, counts in token_counts.items()
    }
    shares = np.array([spec.pools[n].share for n in names])
    available = np.array([float(weights[n].sum()) for n in names])
    total = spec.total
    if total is None:
        strict = [i for i, n in enumerate(names) if not spec.pools[n].upsample]
        pick = (min if strict else max)(available[i] / shares[i] for i in (strict or range(len(names))))
        total = int(np.floor(pick + 1e-9))
    if total <= 0:
        raise MixError("the mix is empty: some pool without upsample has no rows")
    targets = largest_remainder(shares, total).astype(np.float64) if not by_tokens else shares * total
    for i, name in enumerate(names):
        if targets[i] > 0 and available[i] == 0:
            raise MixError(f"pool {name!r} is empty (after leaving out windowed parents): nothing to draw or upsample")
        if targets[i] > available[i] and not spec.pools[name].upsample:
            unit = "tokens" if by_tokens else "rows"
            raise MixError(
                f"pool {name!r} has {available[i]:,.0f} {unit} but its share {shares[i]:g} of {total:,} needs "
                f"{targets[i]:,.0f}; add rows, lower its share or the total, or set upsample: true on it")
    pieces: list[pa.Table] = []
    pool_reports: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng([spec.seed, zlib.crc32(name.encode())])
        idx = draw_pool(weights[name], float(targets[i]), rng, by_tokens)
        n_rows = tables[name].num_rows
        copy = np.zeros(len(idx), np.int32)
        if len(idx) > n_rows:  # the k-th occurrence of a row is copy k
            order = np.argsort(idx, kind="stable")
            first = np.searchsorted(idx[order], idx[order], side="left")
            copy[order] = (np.arange(len(idx)) - first).astype(np.int32)
        piece = tables[name].take(pa.array(idx))
        piece = piece.append_column("mix_pool", pa.array([name] * len(idx), pa.string()))
        pieces.append(piece.append_column("mix_copy", pa.array(copy)))
        counts = token_counts[name]
        pool_reports[name] = {
            "inputs": list(spec.pools[name].inputs),
            "target_share": float(shares[i]),
            "available_rows": int(n_rows),
            "available_tokens": int(counts.sum()) if counts is not None else None,
            "excluded_windowed_parents": int(excluded[name]),
            "selected_rows": int(len(idx)),
            "selected_tokens": int(counts[idx].sum()) if counts is not None else None,
            "unique_rows": int(len(np.unique(idx))),
            "upsample_factor": round(float(weights[name][idx].sum()) / available[i], 6) if available[i] else 0.0,
        }
    mixed = pa.concat_tables(pieces, promote_options="permissive")
    if spec.shuffle and mixed.num_rows:
        mixed = mixed.take(pa.array(np.random.default_rng([spec.seed, 0]).permutation(mixed.num_rows)))
    key = "selected_tokens" if by_tokens else "selected_rows"
    counted = any(c is not None for c in token_counts.values())
    achieved_total = sum(r[key] for r in pool_reports.values())
    report = {
        "unit": spec.unit,
        "seed": spec.seed,
        "tokenizer": (spec.token_column or spec.tokenizer) if counted else None,
        "target_total": int(total),
        "achieved_total": int(achieved_total),
        "rows": int(mixed.num_rows),
        "target": {n: float(s) for n, s in zip(names, shares, strict=True)},
        "achieved": {n: round(r[key] / achieved_total, 6) if achieved_total else 0.0 for n, r in pool_reports.items()},
        "pools": pool_reports,
    }
    return MixResult(mixed, report)


def _count_tokens(table: pa.Table, spec: MixSpec) -> np.ndarray | None:
    import numpy as np

    if spec.token_column:
        if spec.token_column not in table.column_names:
            return None
        return np.asarray(table[spec.token_column].fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    if "content" not in table.column_names:
        return None
    from stages.document_tokens import TokenCounter

    return TokenCounter(spec.tokenizer).count_column(table["content"])
