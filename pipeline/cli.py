"""The ``xmodal`` command line. Every command's ``--help`` has an example.

A user's mistake (a bad argument, a directory or a release's manifest.json where an input
manifest belongs, a misspelt stage, key or parameter) ends in one line on stderr that names the
culprit, ``xmodal COMMAND: error: ...``, and exit code 2, never a traceback: argparse's own
errors included (:class:`OneLineParser`).
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    "pipeline.demo_models.clap_train",
    "pipeline.run.stage_catalog",
    "pipeline.review.cli",
    "pipeline.interchange.commands",
]

CliError = UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the argument (not the usage block), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def half_fraction(text: str) -> float:
    value = fraction(text)
    if value > 0.5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.5, got {value:g}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def require_input_manifest(uri: str, what: str) -> None:
    """UserError unless ``uri`` may be an input manifest (not a directory, not a release's
    manifest.json); ``what`` names the argument."""
    from pipeline.run.inputs import manifest_problem

    problem = manifest_problem(uri)
    if problem:
        raise CliError(f"{what}: {problem}")


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
    """Input records (kept + rejected, by code) apart from rows the stages derived."""
    import pyarrow.compute as pc

    from pipeline.release.summary import summary_lines, tally

    inputs = int(pc.sum(pc.cast(pc.is_null(table["parent_id"]), "int64")).as_py() or 0)
    by_origin = tally(table)
    group = by_origin.get("input", {})
    counts = {"input_records": inputs, "kept": sum(group.get("kept_by_kind", {}).values()),
              "rejected": sum(group.get("rejected_by_kind", {}).values()), "by_origin": by_origin}
    return "\n".join(summary_lines(counts))


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

    if args.media_pool is not None:
        from pipeline.world.bulk import generate_bulk_world

        if args.dataset_faults or args.eval_set:
            raise UserError("--dataset-faults and --eval-set make their own copies and templates; they "
                            "cannot be combined with --media-pool (a bulk world reuses media on purpose)")

        summary = generate_bulk_world(Path(args.out), n=args.n, media_pool=args.media_pool,
                                      fault_rate=args.faults, seed=args.seed)
    else:
        try:
            summary = generate_world(Path(args.out), n=args.n, fault_rate=args.faults, seed=args.seed,
                                     dataset_faults=args.dataset_faults, eval_set=args.eval_set)
        except ValueError as err:  # e.g. an evaluation set too large to stay unlike the world
            raise UserError(str(err)) from None
    print(summary)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from pipeline.run.local_runner import read_inputs, run_stages
    from stages.registry import MODEL_FREE_CHECKS, get_stage_class

    require_input_manifest(args.manifest, "manifest")
    names = [n.strip() for n in args.stages.split(",") if n.strip()] if args.stages else MODEL_FREE_CHECKS
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

    from pipeline.run.config import format_validation_error

    try:
        stage = cls(_parse_sets(args.set))
    except ValidationError as err:
        problems = "; ".join(format_validation_error(err, cls.params_model).splitlines())
        raise CliError(f"stage {args.name}: --set {problems}") from None
    require_input_manifest(args.input, "--input")  # a manifest, or rows.parquet of an earlier stage
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
    actor_stages = [s.name for s in cfg.stages if s.effective_resources().actors]
    if actor_stages and not args.local:
        print(f"xmodal run: note: Ray logs an error-level core_worker.cc line for the actor-pool stages "
              f"({', '.join(actor_stages)}): their actors' constructor arguments are in the object store, "
              "which Ray cannot restart an actor from if that object is lost (ray-project/ray#53727); "
              "expected, and nothing to act on", file=sys.stderr)
    result = run_config(cfg, local=args.local)
    counts = result.manifest["counts"]
    print(f"release: {result.uri}")
    print(f"manifest: {result.uri}/manifest.json")
    print(f"report: {result.uri}/report/index.html")
    print("\n".join(summary_lines(counts)))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from pipeline.release.lint import lint_path
    from pipeline.run.inputs import is_release_manifest

    if is_release_manifest(args.path):
        raise CliError(f"{args.path} is a release's manifest.json, not a shard; lint the release "
                       f"directory: xmodal lint {Path(args.path).parent}")
    local_file = not args.path.startswith("s3://") and Path(args.path).is_file()
    if local_file and not args.path.endswith((".parquet", ".jsonl")):
        raise CliError(f"{args.path}: expected a .parquet or .jsonl shard, a release directory or an s3:// prefix")
    vocab = {"image": args.image_vocab, "audio": args.audio_vocab, "video": args.video_vocab}
    shards, findings = lint_path(args.path, vocab)
    for finding in findings:
        print(finding)
    print(f"{shards} shard(s) checked, {len(findings)} violation(s)")
    if shards == 0:
        raise CliError(f"no .parquet or .jsonl shards under {args.path}")
    return 1 if findings else 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    p.add_argument("--n", type=at_least(1), default=200, help="number of records (default 200)")
    p.add_argument("--faults", type=fraction, default=0.1,
                   help="fraction of records with an injected fault, 0 to 1 (default 0.1)")
    p.add_argument("--seed", type=at_least(0), default=0, help="random seed (default 0)")
    p.add_argument("--dataset-faults", type=half_fraction, default=0.0, metavar="F",
                   help="fraction of records more that carry a template caption or are a near-duplicate "
                        "copy (half each; expected codes in faults.tsv), 0 to 0.5 (default 0), "
                        "e.g. --dataset-faults 0.2")
    p.add_argument("--eval-set", type=at_least(0), default=0, metavar="N",
                   help="also write an evaluation set of N held-out object records to OUT/eval/manifest.jsonl "
                        "and plant copies of a quarter of them in the manifest (expected code in "
                        "faults.tsv, the evaluation row in OUT/eval/leaks.tsv), e.g. --eval-set 40")
    p.add_argument("--media-pool", type=at_least(1), default=None, metavar="K",
                   help="bulk world for scale runs: N records reusing the media of a K-record world")

    p = add("check", "run every check that needs no model, in-process; write DIR/results.parquet", cmd_check)
    p.add_argument("manifest", help="JSONL or Parquet manifest, path or s3:// URI")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--stages", help="comma-separated subset of checks (default: all model-free checks)")
    p.add_argument("--max-record-bytes", type=at_least(1), default=4 << 20,
                   help="longer records are rejected (default 4 MiB)")

    p = add("stage", "run one stage locally on a manifest or on rows from an earlier stage", cmd_stage)
    p.add_argument("name", help="stage name (see xmodal stages)")
    p.add_argument("--input", required=True, help="manifest, or DIR/rows.parquet of an earlier xmodal stage")
    p.add_argument("--output", required=True, help="output directory (rows.parquet)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="stage parameter (repeatable)")
    p.add_argument("--max-record-bytes", type=at_least(1), default=4 << 20,
                   help="longer records are rejected (default 4 MiB)")

    p = add("run", "run the configured stage list on Ray and publish a release", cmd_run)
    p.add_argument("config", help="YAML config")
    p.add_argument("--local", action="store_true", help="run the stages in-process instead of on Ray")

    p = add("lint", "lint released Parquet/JSONL shards (exit 1 on any violation)", cmd_lint)
    p.add_argument("path", help="a shard, a release directory, or an s3:// prefix")
    for m in ("image", "audio", "video"):
        p.add_argument(f"--{m}-vocab", type=at_least(1), default=8192, help=f"{m} token vocabulary size (default 8192)")

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register_cli(add)
    parser.epilog = "examples:\n  " + "\n  ".join(EXAMPLES.values())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a one-line argument error (2)
        return stop.code if isinstance(stop.code, int) else 2
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
        print(f"xmodal {args.command}: error: not found: {_one_line(err)}", file=sys.stderr)
        return 2
    except (IsADirectoryError, NotADirectoryError, PermissionError) as err:
        print(f"xmodal {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # a command that stops with a message (not an exit code)
        if isinstance(stop.code, str):
            print(f"xmodal {args.command}: error: {_one_line(stop.code)}", file=sys.stderr)
            return 2
        raise


def _one_line(err: object) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
