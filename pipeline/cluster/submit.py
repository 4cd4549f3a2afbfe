"""``xmodal submit|status|logs``: run a config as a Ray job on a cluster through the jobs API.

``submit`` validates the config here, then submits ``python -m pipeline.job_entry`` with a runtime
environment: the project directory as ``working_dir`` (``.venv``, ``out``, ``.git`` excluded),
the config text in ``XMODAL_CONFIG_YAML``, the S3 settings of this shell (credentials only with
``--forward-aws-credentials``: a job's env vars are readable through the jobs API), and either
the cluster's own Python environment (the default: the xmodal image on KubeRay, the same venv on
one machine), ``--requirements FILE`` (pinned, installed by Ray per job) or ``--image URI``. It
follows the logs and exits with the job's status: 0 when it succeeded, the driver's exit code
(or 1) when it failed or was stopped.

The bearer token comes from ``--token-file``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``, in that order, and is only ever put in the ``Authorization`` header.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

CONFIG_ENV = "XMODAL_CONFIG_YAML"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What a job never needs from the project directory (Ray's working_dir limit is 500 MiB).
WORKING_DIR_EXCLUDES = [
    ".venv", "out", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    ".hypothesis", ".benchmarks",
]
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def default_address() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")


def read_token(token_file: str | None) -> str | None:
    """The cluster's bearer token, from the first source that has one (module docstring)."""
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as err:
            raise UserError(f"cannot read the token file {token_file}: {err.strerror}") from None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for candidate in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text().strip()
    return None


def job_client(address: str | None, token_file: str | None) -> Any:
    """A ``JobSubmissionClient`` that sends the token; connection problems become UserError."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address:
        raise UserError("no cluster address: pass --address http://HEAD:8265 or set RAY_API_SERVER_ADDRESS")
    token = read_token(token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as err:
        # Ray's own text talks about this process's RAY_AUTH_MODE, which a client does not need.
        first = str(err).strip().splitlines()[0]
        source = "no token found" if token is None else "the token was refused"
        raise UserError(f"{address}: {first} ({source}; pass --token-file or set RAY_AUTH_TOKEN)") from None
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot use the Ray jobs API at {address}: {err}") from None


def _api_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as err:  # the SDK's error for HTTP failures: unknown job, auth, bad runtime_env
        raise UserError(str(err)) from None


def runtime_env_for(args: argparse.Namespace, config_text: str) -> dict[str, Any]:
    """The job's runtime_env from the submit flags (module docstring)."""
    from pipeline.run.ray_runner import FORWARDED_ENV

    names = [k for k in FORWARDED_ENV if k not in SECRET_ENV or args.forward_aws_credentials] + list(args.env)
    env_vars = {k: os.environ[k] for k in names if k in os.environ}
    env_vars[CONFIG_ENV] = config_text
    env_vars["XMODAL_PROGRESS_INTERVAL_S"] = str(args.progress_interval)
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if not args.no_working_dir:
        runtime_env["working_dir"] = str(args.working_dir)
        runtime_env["excludes"] = WORKING_DIR_EXCLUDES
    if args.requirements:
        lines = Path(args.requirements).read_text().splitlines()
        runtime_env["pip"] = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if args.image:
        runtime_env["image_uri"] = args.image
    return runtime_env


def _check_output_is_shared(cfg: Any) -> None:
    output = cfg.release.output
    if "://" not in output and not os.path.isabs(output):
        raise UserError(
            f"release.output {output!r} is relative: a job would write it inside its working directory "
            "on the cluster, which Ray deletes; use s3://… or an absolute path on shared storage"
        )


def _follow(client: Any, job_id: str) -> None:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())


def _wait_terminal(client: Any, job_id: str, timeout_s: float = 60.0) -> Any:
    """The job's details once it is terminal: the log stream can close a moment before the
    status is written."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = _api_call(client.get_job_info, job_id)
        if str(info.status) in TERMINAL_STATES or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


def exit_code_for(info: Any) -> int:
    """0 for SUCCEEDED, the driver's own exit code when it has one, 1 otherwise."""
    if str(info.status) == "SUCCEEDED":
        return 0
    code = getattr(info, "driver_exit_code", None)
    return int(code) if code else 1


def describe(info: Any) -> str:
    def when(ms: int | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else "-"

    lines = [
        f"job:        {info.submission_id}",
        f"status:     {info.status}",
        f"entrypoint: {info.entrypoint}",
        f"started:    {when(info.start_time)}",
        f"ended:      {when(info.end_time)}",
    ]
    if getattr(info, "driver_exit_code", None) is not None:
        lines.append(f"exit code:  {info.driver_exit_code}")
    if info.message:
        lines.append(f"message:    {info.message}")
    return "\n".join(lines)


def cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.run.config import load_config

    cfg = load_config(args.config)  # a config error fails here, not minutes later on the cluster
    _check_output_is_shared(cfg)
    if args.requirements and args.image:
        raise UserError("--requirements and --image exclude each other (Ray installs pip packages or uses an image)")
    runtime_env = runtime_env_for(args, Path(args.config).read_text())
    client = job_client(args.address, args.token_file)
    job_id = args.job_id or f"xmodal-{cfg.dataset}-{cfg.version}-{uuid.uuid4().hex[:8]}"
    _api_call(
        client.submit_job,
        entrypoint="python -m pipeline.job_entry",
        submission_id=job_id,
        runtime_env=runtime_env,
        metadata={"xmodal_dataset": cfg.dataset, "xmodal_version": cfg.version},
    )
    forwarded = sorted(k for k in runtime_env["env_vars"] if k != CONFIG_ENV)
    print(f"submitted {job_id} to {args.address} (env: {', '.join(forwarded)})", flush=True)
    if args.no_wait:
        print(f"follow it with: xmodal logs {job_id} --follow --address {args.address}")
        return 0
    try:
        _follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\ndetached; {job_id} keeps running: xmodal status {job_id} / xmodal logs {job_id} --follow",
              file=sys.stderr)
        return 130
    info = _wait_terminal(client, job_id)
    print(f"job {job_id} {info.status}" + (f": {info.message}" if info.message else ""))
    return exit_code_for(info)


def cmd_status(args: argparse.Namespace) -> int:
    client = job_client(args.address, args.token_file)
    info = _api_call(client.get_job_info, args.job_id)
    print(describe(info))
    return 0 if str(info.status) not in ("FAILED", "STOPPED") else 1


def cmd_logs(args: argparse.Namespace) -> int:
    client = job_client(args.address, args.token_file)
    if args.follow:
        _follow(client, args.job_id)
    else:
        sys.stdout.write(_api_call(client.get_job_logs, args.job_id))
    return 0


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=default_address(),
                   help="Ray dashboard / jobs API, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)")
    p.add_argument("--token-file", help="file holding the cluster's auth token (default: $RAY_AUTH_TOKEN, "
                   "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); the token is never printed")


def register_cli(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "submit",
        "submit a run to a Ray cluster as a job, follow its logs and exit with its status",
        cmd_submit,
        "xmodal submit configs/cluster.yaml --address http://ray-head:8265 --token-file ~/.ray/xmodal_token",
    )
    p.add_argument("config", help="YAML config; release.output must be s3://… or an absolute shared path")
    _add_cluster_args(p)
    p.add_argument("--job-id", help="submission id (default: xmodal-DATASET-VERSION-RANDOM)")
    p.add_argument("--working-dir", type=Path, default=PROJECT_ROOT,
                   help=f"code shipped with the job (default: {PROJECT_ROOT}, without .venv, out, .git)")
    p.add_argument("--no-working-dir", action="store_true", help="ship no code: the cluster's image already has xmodal")
    p.add_argument("--requirements", help="pinned requirements file that Ray installs for the job (no --image)")
    p.add_argument("--image", help="container image for the job's workers (Ray's image_uri; needs podman on the nodes)")
    p.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="also forward this environment variable to the job (repeatable)")
    p.add_argument("--forward-aws-credentials", action="store_true",
                   help="forward AWS_ACCESS_KEY_ID/SECRET/SESSION_TOKEN too (readable through the jobs API; "
                   "prefer credentials on the cluster's pods)")
    p.add_argument("--progress-interval", type=float, default=30.0,
                   help="seconds between progress lines in the log (default 30)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following the logs")

    p = add("status", "show a submitted job's status (exit 1 when it failed or was stopped)", cmd_status,
            "xmodal status xmodal-sample-world-demo-1a2b3c4d --address http://ray-head:8265")
    p.add_argument("job_id", help="submission id printed by xmodal submit")
    _add_cluster_args(p)

    p = add("logs", "print a submitted job's logs", cmd_logs,
            "xmodal logs xmodal-sample-world-demo-1a2b3c4d --follow --address http://ray-head:8265")
    p.add_argument("job_id", help="submission id printed by xmodal submit")
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    _add_cluster_args(p)
