"""Run configuration: YAML validated into typed models.

Errors name the key path and the allowed values, e.g.
``stages[1].params.radius: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stages.base import Resources, Stage, StageParams
from stages.registry import STAGE_CLASSES, get_stage_class


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceOverride(_Model):
    num_cpus: float | None = Field(None, gt=0)
    num_gpus: float | None = Field(None, ge=0)
    memory: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    actors: tuple[int, int] | None = None


class StageSpec(_Model):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    resources: ResourceOverride = Field(default_factory=ResourceOverride)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in STAGE_CLASSES:
            raise ValueError(f"unknown stage {name!r}; allowed: {', '.join(sorted(STAGE_CLASSES))}")
        return name

    def stage_class(self) -> type[Stage]:
        return get_stage_class(self.name)

    def typed_params(self) -> StageParams:
        return self.stage_class().params_model(**self.params)

    def effective_resources(self) -> Resources:
        base = self.stage_class().resources
        over = self.resources.model_dump(exclude_none=True)
        return Resources(**{**base.__dict__, **over})


class RayConfig(_Model):
    address: str | None = Field(None, description="None = start a local Ray; 'auto' or ray://host:port")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the local Ray (default: all)")
    temp_dir: str | None = None


class ReleaseConfig(_Model):
    output: str = Field("out/releases", description="root directory or s3://bucket/prefix")
    shard_target_bytes: int = Field(100_000_000, gt=0)
    jsonl: bool = True
    overwrite: bool = False


class RunConfig(_Model):
    dataset: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    version: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    inputs: list[str] = Field(min_length=1, description="manifests: JSONL or Parquet, paths or s3:// URIs")
    stages: list[StageSpec] = Field(default_factory=list)
    ray: RayConfig = Field(default_factory=RayConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    max_record_bytes: int = Field(4 * 1024 * 1024, gt=0)
    placeholder_vocab: dict[Literal["image", "audio", "video"], int] = Field(
        default_factory=lambda: {"image": 8192, "audio": 8192, "video": 8192}
    )

    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or '(top level)'}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config mapping; stage names may be given as bare strings. Relative paths are
    relative to the current directory (the job's working directory under ``xmodal submit``)."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping at the top level")
    data = dict(data)
    data["stages"] = [{"name": s} if isinstance(s, str) else s for s in data.get("stages", [])]
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    problems = []
    for i, spec in enumerate(cfg.stages):
        try:
            spec.typed_params()
        except ValidationError as err:
            for line in _format_errors(err).splitlines():
                problems.append(f"stages[{i}].params.{line}")
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data)
