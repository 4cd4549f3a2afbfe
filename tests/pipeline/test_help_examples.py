"""Every file that a help example or the README names in the repository exists, and the shipped
example configs load: a new user copying an example never meets "not found"."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from pipeline.cli import EXAMPLES, build_parser
from pipeline.run.config import load_config
from pipeline.training.mixing import parse_mix_spec

REPO = Path(__file__).resolve().parents[2]
# Paths into the repository's own folders; out/... and the like are what the commands write.
REPO_PATH = re.compile(r"(?<![\w/.-])((?:configs|models|deploy|docs|examples|benchmarks)/[\w./-]*\w)")


def help_texts() -> dict[str, str]:
    parser = build_parser()
    commands: dict[str, argparse.ArgumentParser] = parser._subparsers._group_actions[0].choices  # type: ignore
    return {"xmodal": parser.format_help(), **{name: sub.format_help() for name, sub in commands.items()}}


def test_help_examples_name_files_that_exist() -> None:
    texts = help_texts()
    named = {(where, p) for where, text in [*texts.items(), *EXAMPLES.items()] for p in REPO_PATH.findall(text)}
    assert named, "no example names a file of the repository"
    missing = sorted((where, p) for where, p in named if not (REPO / p).exists())
    assert not missing, f"help examples name files that do not exist: {missing}"


def test_the_readme_names_files_that_exist() -> None:
    named = set(REPO_PATH.findall((REPO / "README.md").read_text()))
    assert "configs/demo.yaml" in named
    assert not sorted(p for p in named if not (REPO / p).exists())


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(config: str) -> None:
    path = REPO / "configs" / config
    data = yaml.safe_load(path.read_text())
    if "mix" in data:
        parse_mix_spec(data)
    else:
        load_config(path)
