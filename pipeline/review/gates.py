"""Gates on the reviewers' agreement, checked by ``xmodal review merge``.

Example (YAML, top level or under ``gates:``; or the ``--precision-min`` / ``--miss-rate-max``
flags)::

    review_precision_min: 0.9                  # every reviewed reject code
    review_precision_min: {ERR_CROSS_MDL_OBJ_FLIP: 0.95, ERR_CROSS_MDL_MEDIA: 0.9}
    review_miss_rate_max: 0.05                 # all reviewed kept rows
    review_miss_rate_max: {all: 0.05, ERR_CROSS_MDL_MIRROR: 0.01}
    review_gate_on: wilson                     # the interval's pessimistic end, not the estimate
    on_missing: fail                           # a gated code nobody reviewed fails (or: skip)

The results have the release gates' shape (``pipeline.release.gates.GateResult``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import UserError
from pipeline.release.gates import GateResult
from pipeline.review.agreement import Rate
from schemas.reason_codes import ReasonCode

Fraction = float


class ReviewGates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review_precision_min: Fraction | dict[ReasonCode, Fraction] | None = Field(default=None)
    review_miss_rate_max: Fraction | dict[ReasonCode | Literal["all"], Fraction] | None = Field(default=None)
    review_gate_on: Literal["estimate", "wilson"] = "estimate"
    on_missing: Literal["fail", "skip"] = "fail"

    def any(self) -> bool:
        return self.review_precision_min is not None or self.review_miss_rate_max is not None


def _check_fraction(gates: ReviewGates) -> None:
    for name in ("review_precision_min", "review_miss_rate_max"):
        value = getattr(gates, name)
        values = value.values() if isinstance(value, dict) else [] if value is None else [value]
        if any(not 0 <= v <= 1 for v in values):
            raise UserError(f"{name}: rates must be between 0 and 1, got {value}")


def parse_gates(raw: dict[str, Any], source: str) -> ReviewGates:
    if isinstance(raw.get("gates"), dict):
        raw = {k: v for k, v in raw["gates"].items() if k.startswith("review_") or k == "on_missing"}
    try:
        gates = ReviewGates.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise UserError(f"{source}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    _check_fraction(gates)
    return gates


def load_gates(path: str) -> ReviewGates:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such gates file") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not YAML ({err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of gates")
    return parse_gates(raw, path)


def flag_value(values: list[str], flag: str) -> float | dict[str, float] | None:
    """``--flag 0.9`` or ``--flag CODE=0.9`` (repeatable) as a gate value."""
    if not values:
        return None
    plain = [v for v in values if "=" not in v]
    pairs = dict(v.split("=", 1) for v in values if "=" in v)
    try:
        if plain and not pairs and len(plain) == 1:
            return float(plain[0])
        if plain and pairs:
            return {"all": float(plain[-1]), **{k: float(x) for k, x in pairs.items()}}
        if plain:
            raise UserError(f"{flag} given {len(plain)} plain values; give one, or CODE=VALUE pairs")
        return {k: float(x) for k, x in pairs.items()}
    except ValueError:
        raise UserError(f"{flag}: expected a number or CODE=NUMBER, got {values}") from None


def _result(gate: str, metric: str, op: str, threshold: float, value: float | None, on_missing: str) -> GateResult:
    if value is None:
        skip = on_missing == "skip"
        return GateResult(gate, metric, op, threshold, None, skip, skip, None,
                          f"{gate} {'skipped' if skip else 'FAILED'}: {metric} was not measured (no reviewed row)")
    margin = value - threshold if op == ">=" else threshold - value
    passed = margin >= -1e-12
    side = "below the minimum" if op == ">=" else "above the maximum"
    detail = (f"{gate} passed: {metric} = {value:.4g} {op} {threshold:g}" if passed else
              f"{gate} FAILED: {metric} = {value:.4g}, {side} {threshold:g} by {-margin:.4g}")
    return GateResult(gate, metric, op, threshold, value, passed, False, margin, detail)


def _value(entry: dict[str, Any] | None, bound: str, op: str) -> float | None:
    if not entry or entry.get("rate") is None:
        return None
    if bound == "estimate":
        return float(entry["rate"])
    lo, hi = entry["wilson95"]
    return float(lo if op == ">=" else hi)


def evaluate_review_gates(gates: ReviewGates, figures: dict[str, Any]) -> list[GateResult]:
    """Every configured gate against ``agreement()``'s figures, per code in code order."""
    out: list[GateResult] = []
    bound = gates.review_gate_on
    note = "" if bound == "estimate" else " (Wilson 95% bound)"
    precision = figures.get("precision", {})
    p = gates.review_precision_min
    if isinstance(p, float | int):
        if not precision:
            out.append(_result("review_precision_min", "precision of the reject codes", ">=", float(p), None,
                               gates.on_missing))
        wanted = {code: float(p) for code in precision}
    else:
        wanted = {str(code): v for code, v in (p or {}).items()}
    for code, threshold in sorted(wanted.items()):
        out.append(_result(f"review_precision_min.{code}", f"reviewed precision of {code}{note}", ">=",
                           threshold, _value(precision.get(code), bound, ">="), gates.on_missing))
    m = gates.review_miss_rate_max
    miss = figures.get("miss_rate", {})
    kept_n = int((miss.get("all") or {}).get("n") or 0)
    limits = {"all": float(m)} if isinstance(m, float | int) else {str(code): v for code, v in (m or {}).items()}
    for code, threshold in sorted(limits.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        if code == "all":
            entry, metric = miss.get("all"), f"miss rate on reviewed kept rows{note}"
        else:
            # a code no reviewer named missed nothing: 0 of the reviewed kept rows
            entry = miss.get("by_code", {}).get(code) or Rate(0, kept_n).to_json()
            metric = f"miss rate of {code} on reviewed kept rows{note}"
        out.append(_result(f"review_miss_rate_max.{code}", metric, "<=", threshold,
                           _value(entry, bound, "<="), gates.on_missing))
    return out
