"""``make bench``: run every benchmark module and print one summary table of ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    summary: list[dict[str, object]] = []
    for name in names:
        print(f"\n## {name}", flush=True)
        rows = importlib.import_module(f"benchmarks.{name}").main()
        summary.extend(rows or [])
    print("\n## summary\n")
    print(f"| {'benchmark':28s} | {'metric':52s} | {'value':>12s} | {'target':>10s} |")
    print(f"|{'-' * 30}|{'-' * 54}|{'-' * 14}|{'-' * 12}|")
    for r in summary:
        value = r["value"]
        shown = f"{value:12.3g}" if isinstance(value, float) else f"{value!s:>12s}"
        print(f"| {r['benchmark']!s:28s} | {r['metric']!s:52s} | {shown} | {r.get('target', '')!s:>10s} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
