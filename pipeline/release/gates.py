"""Quality gates: thresholds from the config's ``gates:`` section checked against the release
metrics. Any failing gate stops the release; the message names the gate, the measured value,
the threshold and by how much it missed.

Example (YAML)::

    gates:
      r_at_1_min: 0.5            # both directions: image->text and text->image
      chair_s_max: 0.05
      false_negative_rate_max: 0.1
      reject_rate_max: {ERR_CROSS_MDL_MEDIA: 0.02}
      on_missing: fail           # a gate whose metric is absent fails (or: skip)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.release.writer import ReleaseError
from pipeline.run.config import GatesConfig


class GateError(ReleaseError):
    """One or more quality gates failed; the release was not published."""


@dataclass(frozen=True)
class GateResult:
    gate: str  # config key, e.g. "r_at_1_min" or "reject_rate_max.ERR_CROSS_MDL_MEDIA"
    metric: str  # readable name of what was measured
    op: str  # ">=" (a minimum) or "<=" (a maximum)
    threshold: float
    value: float | None
    passed: bool
    skipped: bool
    margin: float | None  # value - threshold for a minimum, threshold - value for a maximum
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _get(metrics: Mapping[str, Any], path: str) -> float | None:
    node: Any = metrics
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _num(x: float) -> str:
    """Integers as integers (counts), other values to 4 significant digits."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.4g}"


def _check(gate: str, metric: str, op: str, threshold: float, value: float | None,
           on_missing: str, why_missing: str | None) -> GateResult:
    if value is None:
        reason = why_missing or "not computed"
        skip = on_missing == "skip"
        verdict = "skipped" if skip else "FAILED"
        return GateResult(gate, metric, op, threshold, None, skip, skip, None,
                          f"{gate} {verdict}: {metric} was not measured ({reason})")
    margin = value - threshold if op == ">=" else threshold - value
    passed = margin >= 0
    if passed:
        detail = f"{gate} passed: {metric} = {_num(value)} {op} {_num(threshold)}"
    else:
        side = "below the minimum" if op == ">=" else "above the maximum"
        detail = f"{gate} FAILED: {metric} = {_num(value)}, {side} {_num(threshold)} by {_num(-margin)}"
    return GateResult(gate, metric, op, threshold, value, passed, False, margin, detail)


# gate key -> (metric paths and readable names, op, the metric's section for "why missing")
_SIMPLE: dict[str, tuple[list[tuple[str, str]], str, str]] = {
    "chair_i_max": ([("hallucination/chair_i", "CHAIR-i")], "<=", "hallucination"),
    "chair_s_max": ([("hallucination/chair_s", "CHAIR-s")], "<=", "hallucination"),
    "conflict_pair_rate_max": ([("entailment/pair_conflict_rate", "caption-pair conflict rate")],
                               "<=", "entailment"),
    "conflict_image_rate_max": ([("entailment/image_conflict_rate", "image conflict rate")],
                                "<=", "entailment"),
    "continuity_median_min": ([("continuity/median", "median temporal continuity")], ">=",
                              "continuity"),
    "false_negative_rate_max": ([("negatives/false_negative_rate", "false-negative rate")], "<=",
                                "false_negative_rate"),
    "total_reject_rate_max": ([("rejects/total_rate", "reject rate (all codes)")], "<=", "rejects"),
    "kept_min": ([("counts/kept", "kept records")], ">=", "counts"),
}


def evaluate_gates(gates: GatesConfig, metrics: Mapping[str, Any],
                   skipped: Mapping[str, str] | None = None) -> list[GateResult]:
    """Every configured gate, in config order; unset gates are not listed."""
    skipped = skipped or {}
    results: list[GateResult] = []
    for k in (1, 5, 10):
        threshold = getattr(gates, f"r_at_{k}_min")
        if threshold is None:
            continue
        for direction, arrow in (("image_to_text", "image->text"), ("text_to_image", "text->image")):
            value = _get(metrics, f"retrieval/{direction}/r@{k}")
            why = skipped.get("retrieval") or (f"recall_ks has no {k}" if "retrieval" in metrics else None)
            results.append(_check(f"r_at_{k}_min", f"{arrow} R@{k}", ">=", threshold, value,
                                  gates.on_missing, why))
    for gate, (paths, op, section) in _SIMPLE.items():
        threshold = getattr(gates, gate)
        if threshold is None:
            continue
        if gate == "false_negative_rate_max" and _get(metrics, "negatives/false_negative_rate_worst_batch") is not None:
            # the negatives stage filters per batch: no batch may exceed the limit either
            paths = [*paths, ("negatives/false_negative_rate_worst_batch", "false-negative rate, worst batch")]
        for path, name in paths:
            results.append(_check(gate, name, op, float(threshold), _get(metrics, path),
                                  gates.on_missing, skipped.get(section)))
    rates = metrics.get("rejects", {}).get("rate_by_code", {})
    for code, threshold in gates.reject_rate_max.items():
        # A code that rejected nothing has rate 0, not "missing".
        value = rates.get(code.value, 0.0) if "rejects" in metrics else None
        results.append(_check(f"reject_rate_max.{code.value}", f"reject rate of {code.value}", "<=",
                              threshold, value, gates.on_missing, skipped.get("rejects")))
    return results


def failed(results: Sequence[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def failure_message(results: Sequence[GateResult], report_uri: str | None) -> str:
    """The lines printed when gates fail: one per failing gate, then where the report is."""
    bad = failed(results)
    lines = [f"{len(bad)} of {len(results)} quality gate(s) failed; the release was not published:"]
    lines += [f"  {r.detail}" for r in bad]
    if report_uri:
        lines.append(f"report: {report_uri}")
    return "\n".join(lines)
