"""``xmodal stages [NAME]``: what each stage is, takes, adds and rejects, read from the code.

Everything printed comes from the stage classes behind ``stages.registry`` so that it cannot
drift from them: the summary is the first paragraph of the stage module's docstring; parameters
are the fields of ``params_model`` (type, default, the constraints pydantic enforces, which are
what a value is rejected for, and the field's description); resources are ``Stage.resources``;
added columns are ``output_fields``; reason codes are those the stage's module and the stage
helpers it imports name (``ReasonCode.X``, the verdicts it gives) and ``error_code`` (given to a
row on which the stage itself fails), with their meanings from ``schemas.reason_codes``.
"""

from __future__ import annotations

import argparse
import enum
import functools
import importlib
import inspect
import json
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

_CODE_REF = re.compile(r"\bReasonCode\.([A-Z_]+)\b")
# Imports of stage modules, top-level or inside a function (a lazy import is a dependency too).
_STAGE_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(stages\.[\w.]+)[ \t]+import\b|import[ \t]+(stages\.[\w.]+))", re.M)


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: str  # "required" when the field has no default
    constraints: tuple[str, ...]
    description: str


def type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation: ``int | None``, ``'exact' | 'fastdtw'``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _enum_choices(annotation: Any) -> list[str]:
    """The values an Enum (inside lists and optionals too) allows; a Literal's show in its type."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return [c for a in get_args(annotation) for c in _enum_choices(a)]


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "a multiple of"}


def constraints(field: Any) -> tuple[str, ...]:
    """What pydantic rejects a value of this field for, as short phrases."""
    out = []
    for meta in field.metadata:
        for attr, word in _BOUNDS.items():
            if getattr(meta, attr, None) is not None:
                out.append(f"{word} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None) is not None:
            out.append(f"at least {meta.min_length} item(s)")
        if getattr(meta, "max_length", None) is not None:
            out.append(f"at most {meta.max_length} item(s)")
        if getattr(meta, "pattern", None) is not None:
            out.append(f"matches {meta.pattern}")
    choices = _enum_choices(field.annotation)
    if choices:
        out.append("one of " + ", ".join(choices))
    return tuple(out)


def default_text(field: Any) -> str:
    from pydantic import TypeAdapter

    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    try:
        value = TypeAdapter(field.annotation).dump_python(value, mode="json")
    except Exception:  # noqa: BLE001 - a default pydantic cannot dump is shown as Python writes it
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def params_of(stage_cls: Any) -> list[ParamInfo]:
    return [ParamInfo(name, type_name(f.annotation), default_text(f), constraints(f),
                      " ".join((f.description or "").split()))
            for name, f in stage_cls.params_model.model_fields.items()]


def summary_of(stage_cls: Any) -> str:
    doc = inspect.getdoc(importlib.import_module(stage_cls.__module__)) or inspect.getdoc(stage_cls) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    first = re.sub(rf"^Stage ``{re.escape(stage_cls.name)}``:\s*", "", first)
    return first.replace("``", "")


# Stage modules every stage imports; their codes are nobody's verdicts (SCHEMA is the default error_code).
_SHARED_MODULES = {"stages.base", "stages.registry"}


@functools.cache
def _module_facts(name: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The ``stages.*`` modules that module ``name`` imports, and the reason codes it names
    (``ReasonCode.X``) apart from an ``error_code = ReasonCode.X`` class attribute."""
    from schemas.reason_codes import ReasonCode

    source = inspect.getsource(importlib.import_module(name))
    imports = [a or b for a, b in _STAGE_IMPORT.findall(source)]
    source = re.sub(r"error_code\b[^=\n]*=\s*ReasonCode\.[A-Z_]+", "", source)
    codes = frozenset(str(ReasonCode[m]) for m in _CODE_REF.findall(source) if m in ReasonCode.__members__)
    return tuple(imports), codes


def stage_modules(module_name: str) -> list[str]:
    """``module_name`` and the ``stages.*`` helper modules it imports, transitively (where a
    stage's verdicts may live): not the shared base and registry, and not another stage's
    module, whose verdicts are that stage's."""
    from stages.registry import STAGE_CLASSES

    other_stages = {t.split(":")[0] for t in STAGE_CLASSES.values()} - {module_name}
    seen: list[str] = []
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in seen or name in _SHARED_MODULES or name in other_stages:
            continue
        seen.append(name)
        todo += _module_facts(name)[0]
    return seen


def codes_of(stage_cls: Any) -> list[str]:
    """The reason codes a stage's verdicts give: those its module and the stage helpers it
    imports name (``ReasonCode.X``), apart from its ``error_code`` when only the failure guard
    uses it."""
    return sorted(set().union(*(_module_facts(m)[1] for m in stage_modules(stage_cls.__module__))))


def resources_text(stage_cls: Any) -> str:
    r = stage_cls.resources
    pool = f"actor pool of {r.actors[0]} to {r.actors[1]} (loads its model once per actor)" if r.actors else "task pool"
    parts = [pool, f"num_cpus {r.num_cpus:g}", f"batch_size {r.batch_size}"]
    if r.num_gpus:
        parts.append(f"num_gpus {r.num_gpus:g}")
    if r.memory:
        parts.append(f"memory {r.memory} bytes")
    return ", ".join(parts)


def list_stages() -> list[str]:
    from stages.registry import STAGE_CLASSES, get_stage_class

    width = max(map(len, STAGE_CLASSES))
    lines = []
    for name in STAGE_CLASSES:
        cls = get_stage_class(name)
        codes = ", ".join(c.removeprefix("ERR_CROSS_MDL_") for c in codes_of(cls)) or "-"
        failure = str(cls.error_code).removeprefix("ERR_CROSS_MDL_")
        lines.append(f"{name:<{width}}  {summary_of(cls)}  [rejects: {codes}; on a stage error: {failure}]")
    return lines


def describe_stage(name: str) -> list[str]:
    from schemas.reason_codes import MEANINGS, ReasonCode
    from stages.registry import get_stage_class

    cls = get_stage_class(name)
    lines = [f"{name}: {summary_of(cls)}", "", "parameters (xmodal stage --set KEY=VALUE; params: in a config):"]
    params = params_of(cls)
    for p in params:
        checks = f"  ({'; '.join(p.constraints)})" if p.constraints else ""
        lines.append(f"  {p.name}: {p.type} = {p.default}{checks}")
        if p.description:
            lines.append(f"      {p.description}")
    if not params:
        lines.append("  (none)")
    lines += ["", f"resources (resources: in a config): {resources_text(cls)}", "", "adds columns:"]
    lines += [f"  {f.name}: {f.type}" for f in cls.output_fields] or ["  (none)"]
    lines += ["", "rejects with:"]
    lines += [f"  {code}: {MEANINGS[ReasonCode(code)]}" for code in codes_of(cls)] or ["  (no verdicts of its own)"]
    lines.append(f"  {cls.error_code}: a row on which the stage itself fails (the error in reject_detail)")
    return lines


def cmd_stages(args: argparse.Namespace) -> int:
    print("\n".join(describe_stage(args.name) if args.name else list_stages()))
    return 0


def register_cli(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("stages", "list the stages; with a NAME, its parameters, resources, added columns and reason codes",
            cmd_stages, "xmodal stages              # one line per stage\n  xmodal stages clip_score   # one stage")
    p.add_argument("name", nargs="?", help="a stage name (default: list every stage)")
