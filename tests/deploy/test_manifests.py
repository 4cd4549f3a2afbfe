"""deploy/ checked offline: KubeRay kinds against the v1.7.0 CRD schemas (unknown fields are
errors), built-in kinds with kubernetes-validate (strict), the systemd units with
``systemd-analyze verify``, and the places where a manifest names xmodal itself (entrypoints,
mounted config, image Ray version) against the code."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.cluster.nightly import cmd_nightly
from pipeline.run.config import parse_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml",
}
# The oldest Kubernetes the manifests promise to work on (CronJob.timeZone is GA since 1.27), and the newest known.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def strict(schema: Any) -> Any:
    """The CRD schema with ``additionalProperties: false`` wherever it lists properties and does
    not say otherwise, so that a misspelt or misplaced field is an error, not silently dropped."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and not open_ended:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators(crds_dir: Path) -> dict[str, jsonschema.protocols.Validator]:
    validators = {}
    for kind, name in CRD_FILES.items():
        # The C loader: the CRDs are 56,000 lines, several seconds for the pure-Python one.
        crd = yaml.load((crds_dir / name).read_text(), Loader=yaml.CSafeLoader)
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        validators[kind] = jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))
    return validators


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def embedded_rayjob() -> dict[str, Any]:
    rayjob: dict[str, Any] = yaml.safe_load(by_kind(documents("cronjob.yaml"), "ConfigMap")["data"]["rayjob.yaml"])
    return rayjob


def check(doc: dict[str, Any], validators: dict[str, jsonschema.protocols.Validator]) -> list[str]:
    """Every problem with one manifest, as ``kind/name: path: message`` lines."""
    name = doc["metadata"].get("name") or doc["metadata"].get("generateName")
    if doc["kind"] in validators:
        return [f"{doc['kind']}/{name}: {'.'.join(map(str, e.path))}: {e.message}"
                for e in validators[doc["kind"]].iter_errors(doc)]
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{doc['kind']}/{name} (k8s {version}): {'.'.join(map(str, err.path))}: {err.message}")
    return problems


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml", "cronjob.yaml", "raycronjob.yaml"])
def test_manifest_validates(name: str, crd_validators: dict[str, jsonschema.protocols.Validator]) -> None:
    docs = documents(name) + ([embedded_rayjob()] if name == "cronjob.yaml" else [])
    assert docs
    assert [p for doc in docs for p in check(doc, crd_validators)] == []


def test_validation_rejects_unknown_and_misplaced_fields(
    crd_validators: dict[str, jsonschema.protocols.Validator],
) -> None:
    cluster = by_kind(documents("raycluster.yaml"), "RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resource"] = {}
    assert any("'resource' was unexpected" in p for p in check(typo, crd_validators))
    misplaced = copy.deepcopy(cluster)
    misplaced["spec"]["headGroupSpec"]["minReplicas"] = 1
    assert any("'minReplicas' was unexpected" in p for p in check(misplaced, crd_validators))
    cron = by_kind(documents("cronjob.yaml"), "CronJob")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAcountName"] = "x"  # built-in kinds too
    assert any("serviceAcountName" in p for p in check(cron, crd_validators))


def test_cluster_shape_auth_and_mounted_config() -> None:
    docs = documents("raycluster.yaml")
    spec = by_kind(docs, "RayCluster")["spec"]
    assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert 0 == gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    head = spec["headGroupSpec"]["template"]["spec"]
    (mount,) = head["containers"][0]["volumeMounts"]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    config_map = by_kind(docs, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    for key, text in config_map["data"].items():
        cfg = parse_config(yaml.safe_load(text))  # the mounted config is one xmodal accepts
        assert cfg.release.output.startswith("s3://"), key


@pytest.mark.parametrize("rayjob", ["rayjob.yaml", "cronjob.yaml", "raycronjob.yaml"])
def test_entrypoints_are_xmodal_commands_on_the_mounted_config(rayjob: str) -> None:
    if rayjob == "cronjob.yaml":
        spec = embedded_rayjob()["spec"]
    elif rayjob == "raycronjob.yaml":
        spec = by_kind(documents(rayjob), "RayCronJob")["spec"]["jobTemplate"]
    else:
        spec = by_kind(documents(rayjob), "RayJob")["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "xmodal"
    args = build_parser().parse_args(argv[1:])
    assert args.fn is cmd_nightly
    config_map = by_kind(documents("raycluster.yaml"), "ConfigMap")
    assert Path(args.config).parent == Path("/etc/xmodal") and Path(args.config).name in config_map["data"]
    cluster_name = by_kind(documents("raycluster.yaml"), "RayCluster")["metadata"]["name"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster_name}


def test_cronjob_forbids_overlap_and_has_the_rbac_it_uses() -> None:
    docs = documents("cronjob.yaml")
    cron = by_kind(docs, "CronJob")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")["metadata"]["name"]
    binding = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == by_kind(docs, "Role")["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    (rule,) = by_kind(docs, "Role")["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"] and "create" in rule["verbs"]
    container = pod["containers"][0]
    (mount,) = container["volumeMounts"]
    manifest = container["args"][container["args"].index("-f") + 1]
    assert Path(manifest).parent == Path(mount["mountPath"])
    assert Path(manifest).name in by_kind(docs, "ConfigMap")["data"]


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    # verify insists that ExecStart exists: point the install prefix at this checkout's venv.
    prefix = tmp_path / "opt-xmodal"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    (prefix / ".venv" / "bin" / "xmodal").symlink_to(Path(sys.executable).parent / "xmodal")
    units = []
    for name in ("xmodal-nightly.service", "xmodal-nightly.timer"):
        text = (DEPLOY / "systemd" / name).read_text()
        units.append(tmp_path / name)
        units[-1].write_text(text.replace("/opt/xmodal/.venv", str(prefix / ".venv")))
    result = subprocess.run([analyze, "verify", "--man=no", *map(str, units)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr

    service = (DEPLOY / "systemd" / "xmodal-nightly.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", service, re.M)
    args = build_parser().parse_args(shlex.split(exec_start)[1:])
    assert args.fn is cmd_nightly
    assert "SuccessExitStatus=75" in service  # the lock-held exit is not a failed unit


def test_image_pins_the_ray_and_python_of_the_project() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    (image,) = re.findall(r"^ARG RAY_IMAGE=rayproject/ray:(\S+)$", containerfile, re.M)
    ray_pin = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert ray_pin and image.startswith(f"{ray_pin.group(1)}-py")
    python = re.search(r"-py3(\d+)", image)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python and requires == f">=3.{python.group(1)}"
