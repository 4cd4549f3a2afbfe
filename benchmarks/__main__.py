"""``make bench``: run every benchmark in its own process and print one summary table.

Usage: ``python -m benchmarks [--quick] [NAME ...]`` (NAME filters by substring).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    filters = [a for a in argv if not a.startswith("-")]
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    names = [n for n in names if not filters or any(f in n for f in filters)]
    summary: list[dict[str, object]] = []
    failed = []
    for name in names:
        print(f"\n## {name}", flush=True)
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if quick else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                summary.append(json.loads(line[len("RESULT ") :]))
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            failed.append(name)
    print("\n## summary\n")
    print(f"| {'benchmark':16s} | {'metric':64s} | {'value':>10s} | {'target':>10s} |")
    print(f"|{'-' * 18}|{'-' * 66}|{'-' * 12}|{'-' * 12}|")
    for r in summary:
        v = r["value"]
        shown = (
            f"{v:10.3g}"
            if isinstance(v, float) and abs(v) < 1e4
            else f"{v:10,.0f}"
            if isinstance(v, (int, float))
            else str(v)
        )
        print(f"| {r['benchmark']!s:16s} | {r['metric']!s:64s} | {shown:>10s} | {r['target']!s:>10s} |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
