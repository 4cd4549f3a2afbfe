"""A local Ray's own settings: token auth said explicitly (a token of the run's own when the user
has none, nothing written to the home directory) and a temp dir of the run's own."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.run import local_ray


def test_no_token_anywhere_gets_one_of_this_run_kept_in_the_environment(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert local_ray.prepare_auth(env, home=tmp_path)
    assert env["RAY_AUTH_MODE"] == "token"
    token = env["RAY_AUTH_TOKEN"]
    assert len(token) == 64 and int(token, 16) >= 0
    assert list(tmp_path.iterdir()) == []  # nothing written under the home directory
    other: dict[str, str] = {}
    local_ray.prepare_auth(other, home=tmp_path)
    assert other["RAY_AUTH_TOKEN"] != token


def test_the_users_token_is_used_and_their_mode_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    env: dict[str, str] = {}
    assert local_ray.prepare_auth(env, home=tmp_path) and env == {"RAY_AUTH_MODE": "token"}
    env = {"RAY_AUTH_TOKEN_PATH": "/etc/ray/token"}
    assert local_ray.prepare_auth(env, home=tmp_path / "elsewhere")
    assert "RAY_AUTH_TOKEN" not in env
    for mode in ("disabled", "token"):
        env = {"RAY_AUTH_MODE": mode}
        assert not local_ray.prepare_auth(env, home=tmp_path / "elsewhere") and env == {"RAY_AUTH_MODE": mode}


@pytest.fixture()
def short_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))  # short: Ray's socket paths are limited
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_each_run_gets_a_temp_dir_of_its_own_unless_configured(short_tmp: Path) -> None:
    a, b = local_ray.run_temp_dir(None), local_ray.run_temp_dir(None)
    assert a != b
    for path in (a, b):
        assert Path(path).parent == short_tmp and Path(path).name.startswith("xmodal-ray-") and Path(path).is_dir()
    assert local_ray.run_temp_dir("/data/ray") == "/data/ray"
