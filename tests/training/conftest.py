"""A small real release of the sample world for the training tests (built once per session).

``release_uri`` has several shards per kind (a small shard target) so that splits cross shard
boundaries; ``tampered_release`` is a copy whose shards a test may rewrite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pipeline.build import run_config
from pipeline.run.config import parse_config
from pipeline.world import generate_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(out, n=60, fault_rate=0.1, seed=0)
    return out


@pytest.fixture(scope="session")
def release_uri(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = parse_config(
        {
            "dataset": "sw",
            "version": "v1",
            "inputs": [str(world_dir / "manifest.jsonl")],
            "stages": ["placeholder_lint", "media_check"],
            "release": {"output": str(tmp_path_factory.mktemp("releases")), "shard_target_bytes": 6_000},
        }
    )
    return run_config(cfg, local=True).uri


@pytest.fixture()
def tampered_release(release_uri: str, tmp_path: Path) -> Path:
    """A private copy of the release (version directory) that a test may edit."""
    dest = tmp_path / "copy" / "v1"
    shutil.copytree(release_uri, dest)
    return dest
