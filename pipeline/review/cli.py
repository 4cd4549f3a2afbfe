"""``xmodal review``: sample a release for human review, serve the page, merge the verdicts.

Three forms share one command::

    xmodal review RELEASE --out DIR [--seed S] [--per-code N] [--kept N]
    xmodal review serve DIR [--port P]
    xmodal review merge VERDICTS.jsonl [MORE.jsonl ...] RELEASE [gates]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import UserError

FORMS = (
    "  xmodal review RELEASE --out DIR [--seed S] [--per-code N] [--kept N]\n"
    "      a seeded stratified sample of RELEASE as a review page: DIR/index.html opens offline\n"
    "  xmodal review serve DIR [--port P]\n"
    "      serves DIR on 127.0.0.1 and appends the verdicts the page posts to DIR/verdicts.jsonl\n"
    "  xmodal review merge VERDICTS.jsonl [MORE.jsonl ...] RELEASE [--precision-min X|CODE=X]\n"
    "                      [--miss-rate-max X|CODE=X] [--gate-on wilson] [--gates FILE.yaml]\n"
    "      records review_status per judged row in <dataset>/_reviews/<version>/ (the release's\n"
    "      shards are not touched), the agreement per check, and exits 2 when a review gate fails"
)
EXAMPLE = (
    "xmodal review out/releases/sample-world/demo --out out/review --seed 0\n"
    "  xmodal review serve out/review --port 8700\n"
    "  xmodal review merge out/review/verdicts.jsonl out/releases/sample-world/demo --precision-min 0.9"
)
SAMPLE_ONLY = ("out", "seed", "per_code", "kept", "max_media_bytes")
MERGE_ONLY = ("precision_min", "miss_rate_max", "gates", "gate_on")


def _only(args: argparse.Namespace, names: tuple[str, ...], form: str) -> None:
    defaults: dict[str, object] = {"out": None, "seed": 0, "per_code": 5, "kept": 5, "max_media_bytes": 64 << 20,
                "precision_min": [], "miss_rate_max": [], "gates": None, "gate_on": None, "port": 8700}
    used = [n for n in defaults if n not in names and getattr(args, n) != defaults[n]]
    if used:
        flag = "--" + used[0].replace("_", "-")
        raise UserError(f"{flag} does not apply to `xmodal review {form}`")


def cmd_sample(args: argparse.Namespace, release_uri: str) -> int:
    from pipeline.review.page import write_review_page
    from pipeline.review.release_rows import open_release
    from pipeline.review.sample import draw_sample

    _only(args, SAMPLE_ONLY, "RELEASE")
    if not args.out:
        raise UserError("--out DIR is required to write a review page")
    if args.per_code < 0 or args.kept < 0:
        raise UserError("--per-code and --kept must be 0 or more")
    release = open_release(release_uri)
    sample = draw_sample(release, seed=args.seed, per_code=args.per_code, kept=args.kept)
    page = write_review_page(release, sample, Path(args.out), args.max_media_bytes)
    print(f"sampled {page.rows} rows of {release.dataset}/{release.version} (seed {args.seed})")
    for name, n in sample.population.items():
        print(f"  {name:40s}{sum(name in r.strata for r in sample.rows):>5d} of {n}")
    if page.missing_media:
        print(f"{page.missing_media} media file(s) could not be copied; the page says why")
    print(f"page: {Path(args.out) / 'index.html'}  (offline; or: xmodal review serve {args.out})")
    return 0


def cmd_serve(args: argparse.Namespace, directory: str) -> int:
    from pipeline.review.serve import make_server

    _only(args, ("port",), "serve")
    server = make_server(directory, args.port, verbose=args.verbose)
    print(f"serving {directory} at {server.url} ; verdicts -> {Path(directory) / 'verdicts.jsonl'} (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_merge(args: argparse.Namespace, paths: list[str]) -> int:
    from pipeline.review.gates import ReviewGates, flag_value, load_gates, parse_gates
    from pipeline.review.merge import merge_verdicts
    from pipeline.review.release_rows import open_release
    from pipeline.review.verdicts import read_verdicts

    _only(args, MERGE_ONLY, "merge")
    if len(paths) < 2:
        raise UserError("usage: xmodal review merge VERDICTS.jsonl [MORE.jsonl ...] RELEASE")
    gates = load_gates(args.gates) if args.gates else ReviewGates()
    overrides = {"review_precision_min": flag_value(args.precision_min, "--precision-min"),
                 "review_miss_rate_max": flag_value(args.miss_rate_max, "--miss-rate-max"),
                 "review_gate_on": args.gate_on}
    raw = {**gates.model_dump(mode="json", exclude_none=True), **{k: v for k, v in overrides.items() if v is not None}}
    gates = parse_gates(raw, "the gate flags")
    release = open_release(paths[-1])
    result = merge_verdicts(release, read_verdicts(paths[:-1]), gates)
    f = result.figures
    print(f"{f['rows']} judged rows ({f['verdicts']} verdicts, {len(f['reviewers'])} reviewer(s)) -> {result.uri}")
    for code, entry in f["precision"].items():
        lo, hi = entry["wilson95"]
        print(f"  precision {code:32s}{entry['k']:>4d}/{entry['n']:<4d} {entry['rate']:.3f}  [{lo:.3f}, {hi:.3f}]")
    miss = f["miss_rate"]["all"]
    if miss["n"]:
        lo, hi = miss["wilson95"]
        print(f"  miss rate on kept rows{'':20s}{miss['k']:>4d}/{miss['n']:<4d} {miss['rate']:.3f}"
              f"  [{lo:.3f}, {hi:.3f}]")
    for g in result.gates:
        print(f"  {g.detail}")
    print(f"report: {result.uri}/report.html")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words[0] == "serve":
        if len(words) != 2:
            raise UserError("usage: xmodal review serve DIR [--port P]")
        return cmd_serve(args, words[1])
    if words[0] == "merge":
        return cmd_merge(args, words[1:])
    if len(words) != 1:
        raise UserError(f"expected one RELEASE, got {len(words)} arguments (or: serve DIR, merge VERDICTS RELEASE)")
    return cmd_sample(args, words[0])


def register_cli(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("review", "human sampling review: sample a release as a review page, serve it, merge the verdicts",
            cmd_review, EXAMPLE)
    p.description = f"{p.description}\n\n{FORMS}"
    p.usage = ("xmodal review RELEASE --out DIR [sampling options]\n"
               "       xmodal review serve DIR [--port P]\n"
               "       xmodal review merge VERDICTS.jsonl [MORE.jsonl ...] RELEASE [merging options]")
    p.add_argument("words", nargs="+", metavar="WORD", help="RELEASE, or serve DIR, or merge VERDICTS... RELEASE")
    g = p.add_argument_group("sampling (xmodal review RELEASE)")
    g.add_argument("--out", help="directory for index.html, sample.json and media/")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0): same seed, same sample")
    g.add_argument("--per-code", type=int, default=5, help="rejected rows per reason code (default 5)")
    g.add_argument("--kept", type=int, default=5,
                   help="rows per other stratum: kept rows of each kind, flipped, laterality, negatives (default 5)")
    g.add_argument("--max-media-bytes", type=int, default=64 << 20, help="larger media files are not copied")
    g = p.add_argument_group("serving (xmodal review serve DIR)")
    g.add_argument("--port", type=int, default=8700, help="port on 127.0.0.1 (default 8700; 0: any free port)")
    g = p.add_argument_group("merging (xmodal review merge VERDICTS... RELEASE)")
    g.add_argument("--precision-min", action="append", default=[], metavar="X|CODE=X",
                   help="gate: reviewed precision of every code (X) or of one code (repeatable)")
    g.add_argument("--miss-rate-max", action="append", default=[], metavar="X|CODE=X",
                   help="gate: miss rate on reviewed kept rows, overall (X) or named as CODE (repeatable)")
    g.add_argument("--gate-on", choices=["estimate", "wilson"], default=None,
                   help="gate on the estimate (default) or on the Wilson 95%% bound")
    g.add_argument("--gates", help="YAML file with review_precision_min / review_miss_rate_max / review_gate_on")
