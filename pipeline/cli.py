"""The ``xmodal`` command line. Every command's ``--help`` has an example."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

EXAMPLES = {
    "sample": "xmodal sample --out out/sample --n 200 --faults 0.1 --seed 0",
    "check": "xmodal check out/sample/manifest.jsonl --out out/check",
    "stage": (
        "xmodal stage placeholder_lint --input out/sample/manifest.jsonl --output out/lint"
        " --set image_vocab_size=16384"
    ),
    "run": (
        "xmodal run configs/demo.yaml            # local Ray unless ray.address is set\n"
        "  xmodal run configs/demo.yaml --local    # in-process, no Ray"
    ),
    "lint": "xmodal lint out/releases/sample-world/demo    # a release directory, a shard, or s3://…",
}


# Modules that add their own commands: each defines ``register_cli(add)`` where
# ``add(name, help, fn, example) -> argparse.ArgumentParser``; heavy imports stay inside ``fn``.
COMMAND_MODULES: list[str] = [
    "pipeline.cluster.submit",
    "pipeline.cluster.nightly",
    "pipeline.training.mix_command",
    "pipeline.release.publish",
    "pipeline.demo_models.clip_train",
    "pipeline.review.cli",
    "pipeline.run.stage_catalog",
]

CliError = UserError


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def _summary(table: Any) -> str:
    from schemas.records import STATUS_OK

    status = table["status"].to_pylist()
    codes = Counter(c for s, c in zip(status, table["reject_code"].to_pylist(), strict=True) if s != STATUS_OK)
    lines = [f"ok{'':30s}{status.count(STATUS_OK):>8d}"]
    lines += [f"{code:32s}{n:>8d}" for code, n in sorted(codes.items())]
    lines.append(f"{'total':32s}{table.num_rows:>8d}")
    return "\n".join(lines)


def _load_rows(path: str, max_record_bytes: int) -> Any:
    """A manifest (JSONL/Parquet) or the rows.parquet written by an earlier ``xmodal stage``."""
    import pyarrow.parquet as pq

    from access.io import filesystem_for
    from pipeline.run.local_runner import read_inputs

    if path.endswith(".parquet"):
        fs, p = filesystem_for(path)
        with fs.open_input_file(p) as fh:
            if "status" in pq.read_schema(fh).names:
                return pq.read_table(path if "://" in path else p)
    return read_inputs([path], max_record_bytes)


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.world import generate_world

    summary = generate_world(Path(args.out), n=args.n, fault_rate=args.faults, seed=args.seed)
    print(summary)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from pipeline.run.local_runner import read_inputs, run_stages
    from stages.registry import MODEL_FREE_CHECKS, get_stage_class

    names = args.stages.split(",") if args.stages else MODEL_FREE_CHECKS
    stages = [get_stage_class(n)() for n in names]
    run = run_stages(read_inputs([args.manifest], args.max_record_bytes), stages)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["id", "kind", "status", "reject_stage", "reject_code", "reject_detail", "source_ref"]
    pq.write_table(run.table.select(cols), out / "results.parquet")
    print(_summary(run.table))
    print(f"results: {out / 'results.parquet'}")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from pipeline.run.local_runner import run_stages
    from stages.registry import get_stage_class

    cls = get_stage_class(args.name)
    from pydantic import ValidationError

    try:
        stage = cls(_parse_sets(args.set))
    except ValidationError as err:
        from pipeline.run.ingest import describe_validation_error

        raise CliError(f"stage {args.name}: {describe_validation_error(err)}") from None
    run = run_stages(_load_rows(args.input, args.max_record_bytes), [stage])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(run.table, out / "rows.parquet", compression="zstd")
    print(_summary(run.table))
    print(f"rows: {out / 'rows.parquet'}  ({run.timings[0].rows_per_s:.0f} rows/s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.build import run_config
    from pipeline.release.summary import summary_lines
    from pipeline.run.config import load_config

    cfg = load_config(args.config)
    result = run_config(cfg, local=args.local)
    counts = result.manifest["counts"]
    print(f"release: {result.uri}")
    print(f"manifest: {result.uri}/manifest.json")
    print(f"report: {result.uri}/report/index.html")
    print("\n".join(summary_lines(counts)))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from pipeline.release.lint import lint_path

    vocab = {"image": args.image_vocab, "audio": args.audio_vocab, "video": args.video_vocab}
    shards, findings = lint_path(args.path, vocab)
    for finding in findings:
        print(finding)
    print(f"{shards} shard(s) checked, {len(findings)} violation(s)")
    if shards == 0:
        raise CliError(f"no .parquet or .jsonl shards under {args.path}")
    return 1 if findings else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal",
        description=(
            "Build cross-modal training data: bind images, audio, video and text, check the bindings, release shards."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, help_text: str, fn: Callable[[argparse.Namespace], int], example: str | None = None
    ) -> argparse.ArgumentParser:
        if example is not None:
            EXAMPLES[name] = example
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(fn=fn)
        return p

    p = add(
        "sample",
        "generate the synthetic sample world (images, audio, video, documents) with injected faults",
        cmd_sample,
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=int, default=200, help="number of records (default 200)")
    p.add_argument("--faults", type=float, default=0.1, help="fraction of records with an injected fault (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = add("check", "run every check that needs no model, in-process; write DIR/results.parquet", cmd_check)
    p.add_argument("manifest", help="JSONL or Parquet manifest, path or s3:// URI")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--stages", help="comma-separated subset of checks (default: all model-free checks)")
    p.add_argument("--max-record-bytes", type=int, default=4 << 20, help="longer records are rejected (default 4 MiB)")

    p = add("stage", "run one stage locally on a manifest or on rows from an earlier stage", cmd_stage)
    p.add_argument("name", help="stage name (see xmodal stages)")
    p.add_argument("--input", required=True, help="manifest, or DIR/rows.parquet of an earlier xmodal stage")
    p.add_argument("--output", required=True, help="output directory (rows.parquet)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="stage parameter (repeatable)")
    p.add_argument("--max-record-bytes", type=int, default=4 << 20)

    p = add("run", "run the configured stage list on Ray and publish a release", cmd_run)
    p.add_argument("config", help="YAML config")
    p.add_argument("--local", action="store_true", help="run the stages in-process instead of on Ray")

    p = add("lint", "lint released Parquet/JSONL shards (exit 1 on any violation)", cmd_lint)
    p.add_argument("path", help="a shard, a release directory, or an s3:// prefix")
    for m in ("image", "audio", "video"):
        p.add_argument(f"--{m}-vocab", type=int, default=8192, help=f"{m} token vocabulary size (default 8192)")

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register_cli(add)
    parser.epilog = "examples:\n  " + "\n  ".join(EXAMPLES.values())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from pipeline.release.writer import ReleaseError
    from pipeline.run.config import ConfigError
    from stages.registry import UnknownStageError

    try:
        return int(args.fn(args))
    except (CliError, ConfigError, ReleaseError, UnknownStageError, UserError) as err:
        print(f"xmodal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"xmodal {args.command}: error: not found: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
