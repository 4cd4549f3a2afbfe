"""The entrypoint of a job that ``xmodal submit`` sends to a cluster: ``python -m pipeline.job_entry``.

It sits beside the CLI (it calls ``pipeline.cli.main``) so that ``pipeline.cluster`` never imports
the command line.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pipeline.cli import main
from pipeline.cluster.submit import CONFIG_ENV


def job_main() -> int:
    """The entrypoint of a submitted job: ``xmodal -v run`` on the config from the environment."""
    text = os.environ.get(CONFIG_ENV)
    if text is None:
        print(f"python -m pipeline.job_entry: {CONFIG_ENV} is not set"
              " (this module is the job entrypoint of xmodal submit)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="xmodal-job-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(text)
        return main(["-v", "run", str(config)])


if __name__ == "__main__":
    sys.exit(job_main())
