"""One line per headline figure, ``RESULT {json}``, collected by ``python -m benchmarks``."""

from __future__ import annotations

import json


def report(benchmark: str, metric: str, value: float, target: str = "") -> None:
    print(
        "RESULT " + json.dumps({"benchmark": benchmark, "metric": metric, "value": value, "target": target}), flush=True
    )
