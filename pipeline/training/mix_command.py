"""``xmodal mix CONFIG``: read the pools, draw the mix, write its shards and ``mix.json``.

:func:`read_pool` reads a pool's ``.parquet``/``.jsonl`` files, directories and globs (local or
``s3://``); :func:`~pipeline.training.mixing.mix_pools` draws the mix (the config and the rules
are in :mod:`pipeline.training.mixing`); :func:`write_mix` writes ``OUT/data/mix-00000.parquet``
… and then ``OUT/mix.json``, last. A config or input the mix cannot use is a ``UserError``: one
line, exit 2.

Imports of pyarrow and yaml stay inside functions: the CLI imports this module to build
``xmodal --help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.training.mixing import MixError, MixResult, mix_pools, parse_mix_spec

if TYPE_CHECKING:
    import pyarrow as pa


def _release_root(fs: object, path: str) -> str | None:
    """The release folder (the one with ``manifest.json``) a shard file lies in, if any."""
    import posixpath

    parent = posixpath.dirname(path)
    for _ in range(4):  # data/x.parquet .. rejects/<stage>/<code>/part-x.parquet
        parent = posixpath.dirname(parent)
        if fs.get_file_info(f"{parent}/manifest.json").is_file:  # type: ignore[attr-defined]
            return parent
    return None


def read_pool(inputs: list[str]) -> pa.Table:
    """Rows of .parquet / .jsonl files, directories (their .parquet, else .jsonl files) and
    local globs, concatenated (columns unified, missing ones null). Shards of a release have
    their media refs resolved against the release (they are relative to it)."""
    import glob
    import posixpath

    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    from access.io import filesystem_for

    tables = []
    for uri in inputs:
        paths = sorted(glob.glob(uri)) if any(c in uri for c in "*?[") and "://" not in uri else [uri]
        if not paths:
            raise MixError(f"no file matches {uri}")
        for path in paths:
            fs, p = filesystem_for(path)
            info = fs.get_file_info(p)
            if info.type == pafs.FileType.NotFound:
                raise MixError(f"pool input not found: {path}")
            files = [p]
            if info.type == pafs.FileType.Directory:
                found = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(p, recursive=True)) if i.is_file)
                files = [f for f in found if f.endswith(".parquet")] or [f for f in found if f.endswith(".jsonl")]
            for f in files:
                if posixpath.splitext(f)[1] == ".jsonl":
                    with fs.open_input_stream(f) as stream:
                        tables.append(pajson.read_json(stream))
                else:
                    table = pq.read_table(f, filesystem=fs)
                    root = _release_root(fs, f)
                    if root is not None:  # refs relative to the release: the mix lies elsewhere
                        from pipeline.release.portable import resolve_media_column

                        table = resolve_media_column(table, f"s3://{root}" if path.startswith("s3://") else root)
                    tables.append(table)
    if not tables:
        raise MixError(f"no .parquet or .jsonl rows under {inputs}")
    return pa.concat_tables(tables, promote_options="permissive")


def write_mix(
    result: MixResult, output: str, overwrite: bool = False, shard_target_bytes: int = 100_000_000
) -> list[str]:
    """``OUT/data/mix-NNNNN.parquet`` then ``OUT/mix.json`` (last); returns the shard paths."""
    import json

    from access.io import filesystem_for, write_bytes
    from pipeline.release.shards import encode_parquet, sha256_hex, shard_name, split_by_size

    fs, path = filesystem_for(f"{output.rstrip('/')}/mix.json")
    if fs.get_file_info(path).is_file and not overwrite:
        raise MixError(f"{output} already holds a mix (mix.json); pass --overwrite to replace it")
    shards = []
    for i, piece in enumerate(split_by_size(result.table, shard_target_bytes)):
        data = encode_parquet(piece)
        rel = f"data/{shard_name('mix', i, 'parquet')}"
        write_bytes(f"{output.rstrip('/')}/{rel}", data)
        shards.append({"path": rel, "rows": piece.num_rows, "bytes": len(data), "sha256": sha256_hex(data)})
    body = {"mixing": result.report, "shards": shards}
    write_bytes(f"{output.rstrip('/')}/mix.json", json.dumps(body, indent=2, sort_keys=True).encode() + b"\n")
    return [s["path"] for s in shards]


def cmd_mix(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.errors import UserError

    try:
        with open(args.config, encoding="utf-8") as fh:
            spec = parse_mix_spec(yaml.safe_load(fh) or {})
        output = args.out or spec.output
        if not output:
            raise MixError("no output: set mix.output in the config or pass --out")
        pools = {name: read_pool(pool.inputs) for name, pool in spec.pools.items()}
        result = mix_pools(pools, spec)
        shards = write_mix(result, output, overwrite=args.overwrite)
    except (MixError, yaml.YAMLError, OSError) as err:
        raise UserError(str(err)) from None
    report = result.report
    print(f"mix: {report['rows']} rows, {report['achieved_total']} {report['unit']} (target {report['target_total']})")
    for name, pool in report["pools"].items():
        print(f"  {name:24s} target {pool['target_share']:.4f}  achieved {report['achieved'][name]:.4f}  "
              f"rows {pool['selected_rows']:>9d}  x{pool['upsample_factor']:.3f}")
    print(f"shards: {len(shards)} under {output}/data, report: {output}/mix.json")
    return 0


def register_cli(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("mix", "draw a training mix from named pools to target proportions (by samples or tokens)", cmd_mix,
            "xmodal mix configs/mix.yaml --out out/mix/demo")
    p.add_argument("config", help="YAML mix config (see pipeline/training/mixing.py): seed, unit, total, pools")
    p.add_argument("--out", help="output directory or s3:// prefix (default: mix.output)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier mix at the output")
