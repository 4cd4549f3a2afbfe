"""A real Ray cluster on 127.0.0.1: a head with token auth started by ``ray start --head --block``,
jobs submitted with ``xmodal submit``, and a worker node killed in the middle of a run.

Node IPs are 127.0.0.2 (head) and 127.0.0.3 (worker): Ray 2.60 rewrites a literal 127.0.0.1 or
localhost to the machine's interface address, and traffic here stays on loopback.

The head (and the worker) run in their own sessions; they are stopped by SIGTERM to the leader,
a wait, then SIGKILL to whatever is left in the session (Ray's workers take process groups of
their own, not sessions). Nothing here runs ``ray stop``, which would stop every Ray on the
machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.run.local_runner import read_inputs, run_stages
from stages.registry import get_stage_class
from tests.integration.example_world import write_world
from tests.ports import free_port_range, free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ["placeholder_lint", "media_check", "segment_checks"]


def node_ports(*extra: str) -> dict[str, int]:
    """A port for every listener of one node (other Rays may run on this machine) and for each name
    in ``extra``, all distinct, and a worker range that none of them can fall in (tests/ports.py)."""
    names = ["node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
             "metrics-export", "runtime-env-agent", *extra]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    base = free_port_range(40)
    return {**ports, "min-worker": base, "max-worker": base + 39}


def port_flags(ports: dict[str, int]) -> list[str]:
    return [f"--port={p}" if name == "gcs" else f"--{name}-port={p}" for name, p in ports.items()]


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session
                pids.append(int(entry.name))
    return pids


def stop_session(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM to the leader, a wait, then SIGKILL to everything left in its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    for _ in range(3):
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not session_pids(proc.pid):
            break
        time.sleep(0.5)
    proc.wait(10)


@dataclass
class RayHead:
    address: str  # http://127.0.0.1:PORT, the jobs API
    gcs: str  # 127.0.0.1:PORT, what a worker node joins
    token_file: Path
    temp_dir: Path
    env: dict[str, str]  # what the nodes run with: token auth, this venv first on PATH

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_file.read_text()}"}

    def get(self, path: str) -> object:
        req = urllib.request.Request(self.address + path, headers=self.auth())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def alive_node_ips(self) -> list[str]:
        data = self.get("/api/v0/nodes?limit=100")
        rows = data["data"]["result"]["result"]  # type: ignore[index]
        return sorted(n["node_ip"] for n in rows if n["state"] == "ALIVE")

    def alive_nodes(self) -> int:
        return len(self.alive_node_ips())


def alive(proc: subprocess.Popen[bytes], log_path: Path) -> bool:
    """True while ``proc`` runs; once it has exited, a failure that shows the end of its log."""
    if proc.poll() is not None:
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"{log_path.name}: the process exited with {proc.returncode}:\n{tail}")
    return True


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (OSError, RuntimeError):  # not up yet; the SDK raises RuntimeError for a 404
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A head with one CPU and token auth, its own temp dir and ports, on loopback."""
    base = tmp_path_factory.mktemp("head")
    token_file = base / "token"
    token_file.write_text(secrets.token_hex(32))
    temp_dir = Path("/tmp") / f"xh-{secrets.token_hex(3)}"  # short: Ray's socket paths are length-limited
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), PATH=f"{BIN}:{env.get('PATH', '')}")
    ports = node_ports("gcs", "dashboard", "ray-client-server")
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.2", "--dashboard-host=127.0.0.1",
        "--num-cpus=1", "--object-store-memory=200000000", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        *port_flags(ports),
    ]
    log_path = base / "head.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{ports['dashboard']}", f"127.0.0.2:{ports['gcs']}", token_file, temp_dir, env)
    try:
        wait_for(lambda: alive(proc, log_path) and head.alive_nodes() == 1, 90, "the Ray head")
        yield head
    finally:
        stop_session(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_worker(head: RayHead, num_cpus: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "ray"), "start", "--block", f"--address={head.gcs}", "--node-ip-address=127.0.0.3",
        f"--num-cpus={num_cpus}", "--object-store-memory=200000000", "--disable-usage-stats",
        *port_flags(node_ports()),
    ]
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=head.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def write_config(path: Path, manifest: Path, output: Path, version: str, batch_size: int | None = None) -> Path:
    stages: list[object] = list(STAGES) if batch_size is None else [
        {"name": n, "resources": {"batch_size": batch_size}} for n in STAGES
    ]
    cfg = {"dataset": "world", "version": version, "inputs": [str(manifest)], "stages": stages,
           "release": {"output": str(output)}}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def xmodal(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    return subprocess.run([str(BIN / "xmodal"), *args], cwd=REPO, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def expected_statuses(manifest: Path) -> dict[str, str]:
    """id -> status (or reject code) from the in-process runner: the reference for the cluster."""
    table = run_stages(read_inputs([str(manifest)], 4 << 20), [get_stage_class(n)() for n in STAGES]).table
    ids, status, codes = (table[c].to_pylist() for c in ("id", "status", "reject_code"))
    return {i: (c or s) for i, s, c in zip(ids, status, codes, strict=True)}


def released_statuses(release: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for shard in (release / "jsonl").glob("*.jsonl"):
        counts.update(json.loads(line)["id"] for line in shard.read_text().splitlines())
    return counts


def test_submit_follows_a_token_auth_job_to_its_release(
    ray_head: RayHead, examples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_world(tmp_path, examples_dir, copies=1, files=("objects.jsonl", "segments.jsonl"))
    config = write_config(tmp_path / "cfg.yaml", manifest, tmp_path / "rel", "v1")
    token = ray_head.token_file.read_text()

    # The real command line, end to end, with the token in a file only.
    run = xmodal("submit", str(config), "--address", ray_head.address, "--token-file", str(ray_head.token_file),
                 "--progress-interval", "1", "--job-id", "xmodal-test-submit")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert token not in run.stdout + run.stderr
    assert "submitted xmodal-test-submit" in run.stdout
    assert "job xmodal-test-submit SUCCEEDED" in run.stdout
    assert "stage all stages done:" in run.stdout and "rows/s" in run.stdout  # progress under a job
    release = tmp_path / "rel" / "world" / "v1"
    counts = json.loads((release / "manifest.json").read_text())["counts"]
    expected = expected_statuses(manifest)
    assert counts["input_records"] == 16 == counts["kept"] + counts["rejected"]
    assert dict(released_statuses(release)) == {i: 1 for i, s in expected.items() if s == "ok"}
    assert f"release: {release}" in run.stdout

    # The other commands in-process (no interpreter start each): token from the environment.
    for name in [k for k in os.environ if k.startswith("RAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
    assert cli.main(["submit", str(config), "--address", ray_head.address, "--no-wait"]) == 2
    denied = capsys.readouterr().err
    assert "xmodal submit: error:" in denied and "no token found" in denied and "Traceback" not in denied
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    assert cli.main(["status", "xmodal-test-submit", "--address", ray_head.address]) == 0
    assert "status:     SUCCEEDED" in capsys.readouterr().out
    assert cli.main(["logs", "xmodal-test-submit", "--address", ray_head.address]) == 0
    assert f"release: {release}" in capsys.readouterr().out
    assert cli.main(["status", "no-such-job", "--address", ray_head.address]) == 2
    assert "no-such-job" in capsys.readouterr().err

    # A job that fails: submit exits with the driver's own exit code (2: a clean xmodal error).
    broken = write_config(tmp_path / "broken.yaml", tmp_path / "absent.jsonl", tmp_path / "rel", "v2")
    assert cli.main(["submit", str(broken), "--address", ray_head.address]) == 2
    out = capsys.readouterr().out
    assert "FAILED" in out and "absent.jsonl" in out
    assert not (tmp_path / "rel" / "world" / "v2").exists()


def test_job_survives_a_worker_killed_mid_run(ray_head: RayHead, examples_dir: Path, tmp_path: Path) -> None:
    manifest = write_world(tmp_path, examples_dir, copies=6, files=("segments.jsonl", "objects.jsonl"))
    config = write_config(tmp_path / "cfg.yaml", manifest, tmp_path / "rel", "v1", batch_size=1)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(ray_head, num_cpus=2, log_path=worker_log)
    try:
        wait_for(lambda: alive(worker, worker_log) and ray_head.alive_nodes() == 2, 90, "the worker node to join")
        assert ray_head.alive_node_ips() == ["127.0.0.2", "127.0.0.3"]  # all traffic on loopback
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(ray_head.address, headers=ray_head.auth())
        submit = subprocess.Popen(
            [str(BIN / "xmodal"), "submit", str(config), "--address", ray_head.address, "--token-file",
             str(ray_head.token_file), "--progress-interval", "1", "--job-id", "xmodal-test-kill"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        # Kill the worker once the stages are writing rows: tasks are then running on both nodes.
        wait_for(lambda: "stage all stages:" in client.get_job_logs("xmodal-test-kill"), 180, "the run to start")
        assert str(client.get_job_status("xmodal-test-kill")) == "RUNNING"
        stop_session(worker, grace_s=0)  # SIGKILL: a node lost, not a clean shutdown
        out, _ = submit.communicate(timeout=300)
    finally:
        stop_session(worker, grace_s=0)
    assert submit.returncode == 0, out[-4000:]
    assert ray_head.alive_nodes() == 1
    release = tmp_path / "rel" / "world" / "v1"
    counts = json.loads((release / "manifest.json").read_text())["counts"]
    expected = expected_statuses(manifest)
    assert counts["input_records"] == len(expected) == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_code"] == dict(sorted(Counter(s for s in expected.values() if s != "ok").items()))
    # Nothing lost, nothing doubled: every kept id exactly once.
    assert dict(released_statuses(release)) == {i: 1 for i, s in expected.items() if s == "ok"}
