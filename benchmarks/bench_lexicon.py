"""Object mentions: the word lookup (ASCII text) against the lexicon regex it replaces.

Every caption, document text and box label of a generated sample world (``--quick``: 100
records, else 400) is searched for object names both ways, best of 5 interleaved repeats on one
core; the two must find the same spans. Printed: texts/s each way, their ratio (the lookup's
speedup), and ``find_object_mentions`` texts/s (lookup plus modifiers and negation), which CHAIR,
entailment, counterfactuals and the caption negatives call for every caption.

Run: ``python -m benchmarks.bench_lexicon [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._result import report  # noqa: E402


def corpus(n: int) -> list[str]:
    from pipeline.world import generate_world

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-lexicon-") as tmp:
        generate_world(Path(tmp), n=n, fault_rate=0.1, seed=0)
        lines = (Path(tmp) / "manifest.jsonl").read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the world's injected malformed lines
    texts: list[str] = []
    for r in records:
        if not isinstance(r, dict):
            continue
        texts += [t for t in [r.get("content"), *(r.get("captions") or [])] if isinstance(t, str) and t]
        texts += [b["label"] for b in r.get("boxes") or [] if isinstance(b, dict) and isinstance(b.get("label"), str)]
    return [t for t in texts if t.isascii()]


def best_rate(fns: dict[str, Callable[[str], object]], texts: list[str], repeats: int = 5) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved: machine noise falls on both alike
            t0 = time.perf_counter()
            for t in texts:
                fn(t)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(texts) / s for name, s in best.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from stages.object_lexicon import _ascii_spans, _regex_spans, find_object_mentions

    texts = corpus(100 if args.quick else 400)
    differ = [t for t in texts if list(_ascii_spans(t)) != list(_regex_spans(t))]
    if differ:
        raise SystemExit(f"the word lookup and the regex disagree on {len(differ)} text(s), first: {differ[0]!r}")
    rates = best_rate({"lookup": lambda t: list(_ascii_spans(t)), "regex": lambda t: list(_regex_spans(t)),
                       "mentions": find_object_mentions}, texts)
    chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} ASCII texts, {chars:.0f} characters on average: lookup {rates['lookup']:,.0f}/s, "
          f"regex {rates['regex']:,.0f}/s, find_object_mentions {rates['mentions']:,.0f}/s")
    report("lexicon", "object-name spans: word lookup texts/s / regex texts/s (sample world)",
           round(rates["lookup"] / rates["regex"], 1), ">= 5")
    report("lexicon", "find_object_mentions texts/s, 1 core", round(rates["mentions"]), "")


if __name__ == "__main__":
    main()
