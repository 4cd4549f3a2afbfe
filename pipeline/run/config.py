"""Run configuration: YAML validated into typed models.

Errors name the key path and the allowed values, e.g.
``stages[1].params.radius: Input should be greater than or equal to 1``; a misspelt key or
stage name gets the closest allowed one (``did you mean``), and a stage entry that is neither
form (``- name`` or ``- name: NAME`` with ``params``/``resources``) is shown the two forms.
"""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from access.paths import normalize_root
from pipeline.run.inputs import manifest_problem
from schemas.reason_codes import ReasonCode
from schemas.records import ROW_SCHEMA
from stages.base import Resources, Stage, StageParams
from stages.dataset_checks import DatasetChecksParams, required_columns
from stages.registry import STAGE_CLASSES, closest, did_you_mean, get_stage_class, unknown_stage_message

# Names beside the versions in ``<root>/<dataset>/``: the pointer and failed-gate reports.
RESERVED_VERSION_NAMES = frozenset({"latest", "_failed"})

RetrievalKind = Literal["object", "segment", "document", "text"]
PlaceholderModality = Literal["image", "audio", "video"]


# Typed default factories: mypy infers ``lambda: ["object"]`` as returning list[str], which is
# not the field's list[RetrievalKind].
def _default_retrieval_kinds() -> list[RetrievalKind]:
    return ["object"]


def _default_placeholder_vocab() -> dict[PlaceholderModality, int]:
    return {"image": 8192, "audio": 8192, "video": 8192}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key path."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceOverride(_Model):
    num_cpus: float | None = Field(default=None, gt=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    actors: tuple[int, int] | None = None


class StageSpec(_Model):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    resources: ResourceOverride = Field(default_factory=ResourceOverride)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in STAGE_CLASSES:
            raise ValueError(unknown_stage_message(name))
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
    address: str | None = Field(default=None, description="None = start a local Ray; 'auto' or ray://host:port")
    num_cpus: int | None = Field(default=None, gt=0, description="CPUs of the local Ray (default: all)")
    temp_dir: str | None = None
    lines_per_block: int = Field(default=2000, ge=0, description="JSON-lines manifests are cut into "
                                 "blocks of this many lines, so stages run in parallel (0: one block a file)")
    s3_credentials_file: str | None = Field(
        default=None, description="an AWS shared-credentials file that the workers read (the path "
        "reaches them as AWS_SHARED_CREDENTIALS_FILE, never its contents); without it, workers use "
        "their own environment or instance role, and a local Ray's inherit the driver's")

    @field_validator("s3_credentials_file")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError("must be an absolute path (workers do not share the driver's directory)")
        return path


class ReleaseConfig(_Model):
    output: str = Field(default="out/releases", description="root directory or s3://bucket/prefix")
    shard_target_bytes: int = Field(default=100_000_000, gt=0)
    jsonl: bool = True
    overwrite: bool = False
    media: Literal["relative", "copy", "embed"] = Field(
        default="copy", description="kept rows' media refs: copy (each file once into the release's "
        "media/<aa>/<sha256><ext>, referenced relative to the release: portable, and the same bytes "
        "wherever the release is written), relative (to the release folder, nothing copied: a release "
        "moved with its media keeps them) or embed (bytes in a media_bytes column); rejects keep the "
        "URIs the build read")
    # S3 only: by default each file goes up as it is written; with build_dir, the release is
    # built in that local directory first, then uploaded (xmodal publish resumes a failed upload).
    build_dir: str | None = Field(default=None, description="S3 only: build the release in this local "
                                  "directory, then upload it (kept when the upload fails); default: "
                                  "stream each file to S3 as it is written, no local copy")
    multipart_threshold_bytes: int = Field(default=64 * 2**20, ge=5 * 2**20,
                                           description="files at least this large go up in parts")
    multipart_part_bytes: int = Field(default=16 * 2**20, ge=5 * 2**20, le=5 * 2**30,
                                      description="part size (S3: 5 MiB to 5 GiB)")
    upload_attempts: int = Field(default=5, ge=1, le=20, description="tries per request before giving up")
    upload_backoff_s: float = Field(default=0.5, gt=0, le=60, description="first retry delay; doubles")


class MetricsConfig(_Model):
    """Release metrics. Embedding and score columns are found by name when not given."""

    recall_ks: tuple[int, ...] = Field(default=(1, 5, 10), min_length=1)
    recall_max_images: int = Field(default=5000, ge=2, description="release-level recall over at "
                                   "most this many images (a fixed sample by id hash beyond it)")
    batch_images: int = Field(default=1000, ge=2, description="per-batch recall pool size")
    retrieval_kinds: list[RetrievalKind] = Field(
        default_factory=_default_retrieval_kinds, min_length=1,
        description="kinds whose rows are image-caption pairs for recall (one image a row)")
    image_embedding_column: str | None = None
    text_embedding_columns: list[str] | None = Field(
        default=None, description="columns of text embeddings: one vector a row, or a list of "
        "vectors (several captions); all texts of a row are captions of its image")
    similarity_column: str | None = None
    heatmap_images: int = Field(default=12, ge=2, le=64)
    examples_per_code: int = Field(default=3, ge=0, le=50)
    sample_seed: int = Field(default=0, ge=0, description="seed of the fixed-size samples (recall, "
                             "distributions) drawn by id hash; recorded in the metrics")

    @field_validator("recall_ks")
    @classmethod
    def _positive(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be at least 1")
        return tuple(sorted(set(ks)))


class GatesConfig(_Model):
    """Quality gates: a release whose metrics fail any gate is not published. Rates are
    fractions in [0, 1]. Recall gates apply to both directions (image->text, text->image)."""

    r_at_1_min: float | None = Field(default=None, ge=0, le=1)
    r_at_5_min: float | None = Field(default=None, ge=0, le=1)
    r_at_10_min: float | None = Field(default=None, ge=0, le=1)
    chair_i_max: float | None = Field(default=None, ge=0, le=1)
    chair_s_max: float | None = Field(default=None, ge=0, le=1)
    conflict_pair_rate_max: float | None = Field(default=None, ge=0, le=1)
    conflict_image_rate_max: float | None = Field(default=None, ge=0, le=1)
    continuity_median_min: float | None = Field(default=None, ge=-1, le=1)
    false_negative_rate_max: float | None = Field(default=None, ge=0, le=1)
    reject_rate_max: dict[ReasonCode, float] = Field(
        default_factory=dict, description="per reason code: rejected input records / input records")
    total_reject_rate_max: float | None = Field(default=None, ge=0, le=1)
    kept_min: int | None = Field(default=None, ge=0)
    on_missing: Literal["fail", "skip"] = Field(
        default="fail", description="a gate whose metric could not be computed (e.g. no "
        "embeddings) fails the release, or is skipped with a note")

    @field_validator("reject_rate_max")
    @classmethod
    def _rates(cls, rates: dict[ReasonCode, float]) -> dict[ReasonCode, float]:
        bad = [f"{code.value}: {r}" for code, r in rates.items() if not 0 <= r <= 1]
        if bad:
            raise ValueError(f"rates must be between 0 and 1 ({', '.join(bad)})")
        return rates


# ReleaseConfig fields that change where and how a release is delivered, never its bytes.
_DELIVERY_FIELDS = {"output", "overwrite", "build_dir", "multipart_threshold_bytes",
                    "multipart_part_bytes", "upload_attempts", "upload_backoff_s"}


class RunConfig(_Model):
    dataset: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    version: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    inputs: list[str] = Field(min_length=1, description="manifests: JSONL or Parquet, paths or s3:// URIs")
    stages: list[StageSpec] = Field(default_factory=list)
    ray: RayConfig = Field(default_factory=RayConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    max_record_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    placeholder_vocab: dict[PlaceholderModality, int] = Field(default_factory=_default_placeholder_vocab)
    media_roots: list[str] = Field(
        default_factory=list, description="local folders and s3:// prefixes that media refs may point "
        "into, besides each manifest's own folder (access.paths); relative to the current directory")
    dataset_checks: DatasetChecksParams | None = Field(
        default=None, description="templates, near-duplicates and evaluation leakage over the whole "
        "dataset, on the rows as the stage named by `after` leaves them (stages.dataset_checks)")

    @field_validator("media_roots")
    @classmethod
    def _media_roots(cls, roots: list[str]) -> list[str]:
        for root in roots:
            normalize_root(root)  # MediaPathError is a ValueError: the key path is reported
        return roots

    @field_validator("version")
    @classmethod
    def _not_reserved(cls, version: str) -> str:
        if version in RESERVED_VERSION_NAMES:
            raise ValueError(f"{version!r} is reserved in the release layout; choose another version")
        return version

    def config_hash(self) -> str:
        """The sha256 of what decides a release's content: where it ran (``ray``) and how it is
        delivered (output root, overwrite, build directory, upload settings) are left out, so the
        same build on another cluster or bucket has the same hash."""
        data = self.model_dump(mode="json", exclude={"ray": True, "release": _DELIVERY_FIELDS})
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


STAGE_ENTRY_FORMS = ("a stage entry is a name (`- media_check`) or a mapping with `name` and optional "
                     "`params` and `resources` (`- name: media_check` then `params: {decode: false}`)")


def _model_at(model: Any, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the keys at ``loc`` under ``model`` (through lists and
    optional fields), or None where ``loc`` leads elsewhere (a dict, a scalar)."""
    current = model
    for part in loc:
        while get_origin(current) in (Union, types.UnionType):
            args = [a for a in get_args(current) if a is not type(None)]
            if len(args) != 1:
                return None
            current = args[0]
        if isinstance(part, int):
            if get_origin(current) is not list:
                return None
            current = get_args(current)[0]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per error: ``key.path: message``; an unknown key gets the closest allowed key
    of ``model`` at that path and the allowed keys."""
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        holder = _model_at(model, tuple(e["loc"][:-1])) if model and e["type"] == "extra_forbidden" else None
        if holder is not None:
            allowed = list(holder.model_fields)
            msg += f"{did_you_mean(str(e['loc'][-1]), allowed)}; allowed: {', '.join(allowed)}"
        lines.append(f"{path or '(top level)'}: {msg}")
    return "\n".join(lines)


def _stage_entry(i: int, entry: Any) -> dict[str, Any]:
    """``{"name": ...}`` for a bare name; a mapping with ``name`` as it is; anything else (a
    Data-Juicer-style ``- media_check: {}``, a list, a number) is a ConfigError showing the forms."""
    if isinstance(entry, str):
        return {"name": entry}
    if isinstance(entry, dict) and "name" in entry:
        return entry
    hint = ""
    if isinstance(entry, dict) and len(entry) == 1:
        (key, value), = entry.items()
        name = str(key) if str(key) in STAGE_CLASSES else closest(str(key), STAGE_CLASSES)
        if name is not None:
            params = f", params: {json.dumps(value)}" if isinstance(value, dict) and value else ""
            hint = f"; here: `- {{name: {name}{params}}}`"
    raise ConfigError(f"stages[{i}]: cannot read the entry {json.dumps(entry, default=str)}: {STAGE_ENTRY_FORMS}{hint}")


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config mapping; stage names may be given as bare strings. Relative paths are
    relative to the current directory (the job's working directory under ``xmodal submit``)."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping at the top level")
    data = dict(data)
    stages = data.get("stages") or []
    if not isinstance(stages, list):
        raise ConfigError(f"stages: expected a list of stage entries, got {json.dumps(stages, default=str)}: "
                          f"{STAGE_ENTRY_FORMS}")
    data["stages"] = [_stage_entry(i, s) for i, s in enumerate(stages)]
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, RunConfig)) from None
    problems = [f"inputs[{i}]: {p}" for i, p in enumerate(map(manifest_problem, cfg.inputs)) if p]
    for i, spec in enumerate(cfg.stages):
        try:
            spec.typed_params()
        except ValidationError as err:
            for line in format_validation_error(err, spec.stage_class().params_model).splitlines():
                problems.append(f"stages[{i}].params.{line}")
    checks = cfg.dataset_checks
    names = [spec.name for spec in cfg.stages]
    if checks is not None and checks.after not in names:
        problems.append(f"dataset_checks.after: {checks.after!r} is not a stage of this config "
                        f"(stages: {', '.join(names) or 'none'})")
    elif checks is not None:
        # Every stage's output_fields are always in its output: a column none of the stages up to
        # `after` writes would only be found missing once the data is read.
        written = set(ROW_SCHEMA.names) | {f.name for spec in cfg.stages[:names.index(checks.after) + 1]
                                           for f in spec.stage_class().output_fields}
        problems += [f"dataset_checks.{setting}: no stage up to {checks.after!r} writes {column!r} "
                     f"(run the stage that writes it before dataset_checks.after)"
                     for setting, column in required_columns(checks) if column not in written]
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; expected a YAML config file (e.g. configs/demo.yaml)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    try:
        return parse_config(data)
    except ConfigError as err:  # every line names the file, then the key path
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(err).splitlines())) from None
