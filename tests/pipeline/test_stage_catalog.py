"""``xmodal stages`` against the registry: every stage listed, and for each one every parameter
(its default read back equals the real default, its bounds shown), its resources, added
columns and reason codes; the README's stage table agrees with what the code rejects with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from pipeline.cli import main
from pipeline.run.stage_catalog import codes_of
from stages.registry import STAGE_CLASSES, get_stage_class

REPO = Path(__file__).resolve().parents[2]


def output_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_the_list_has_one_line_per_registered_stage(capsys: pytest.CaptureFixture[str]) -> None:
    lines = output_of(["stages"], capsys)
    assert [ln.split()[0] for ln in lines] == list(STAGE_CLASSES)
    for line in lines:
        cls = get_stage_class(line.split()[0])
        for code in codes_of(cls):
            assert code.removeprefix("ERR_CROSS_MDL_") in line, line


@pytest.mark.parametrize("name", list(STAGE_CLASSES))
def test_one_stage_shows_every_parameter_resource_column_and_code(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    cls = get_stage_class(name)
    text = "\n".join(output_of(["stages", name], capsys))
    for pname, field in cls.params_model.model_fields.items():
        match = re.search(rf"^  {re.escape(pname)}: (?P<type>.+?) = (?P<default>.+?)(?:  \((?P<checks>.*)\))?$",
                          text, re.MULTILINE)
        assert match, f"{name}.{pname} missing from:\n{text}"
        if field.is_required():
            assert match["default"] == "required"
        else:  # the printed default, read back, is the default the stage really uses
            shown: Any = TypeAdapter(field.annotation).validate_python(json.loads(match["default"]))
            assert shown == field.get_default(call_default_factory=True), (name, pname)
        for meta in field.metadata:
            for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                if getattr(meta, attr, None) is not None:
                    assert f"{word} {getattr(meta, attr)}" in (match["checks"] or ""), (name, pname)
        if field.description:
            assert " ".join(field.description.split()) in text, (name, pname)
    r = cls.resources
    assert f"num_cpus {r.num_cpus:g}" in text and f"batch_size {r.batch_size}" in text
    assert ("actor pool" in text) == (r.actors is not None)
    for f in cls.output_fields:
        assert f"  {f.name}: {f.type}" in text
    rejects = text.split("rejects with:\n", 1)[1]
    assert f"  {cls.error_code}: a row on which the stage itself fails" in rejects
    for code in codes_of(cls):
        assert f"  {code}: " in rejects


def test_codes_are_the_verdicts_the_stage_module_gives() -> None:
    assert codes_of(get_stage_class("object_spatial")) == ["ERR_CROSS_MDL_MIRROR", "ERR_CROSS_MDL_OBJ_FLIP"]
    assert codes_of(get_stage_class("negatives_text")) == []  # its error_code only guards failures


def test_the_readme_stage_table_names_the_codes_the_code_gives() -> None:
    rows = re.findall(r"^\| ((?:`[a-z_]+`(?:, )?)+) \| ([^|]+) \|", (REPO / "README.md").read_text(), re.MULTILINE)
    assert rows, "the README's stage table is gone"
    for names, codes in rows:
        for name in re.findall(r"`([a-z_]+)`", names):
            assert name in STAGE_CLASSES, name
            said = {f"ERR_CROSS_MDL_{c}" for c in re.findall(r"`([A-Z_]+)`", codes)}
            assert said <= set(codes_of(get_stage_class(name))), (name, said)
