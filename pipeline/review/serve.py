"""``xmodal review serve DIR``: the review page over HTTP on 127.0.0.1, and the verdicts it
POSTs appended to ``DIR/verdicts.jsonl``.

``GET`` serves the files under DIR (the page, its media, ``verdicts.jsonl``). ``POST /verdicts``
takes one verdict as a JSON object or several as JSONL; each is validated and must name the
dataset and version of ``DIR/sample.json``, otherwise nothing is written and the answer is 400
with the line and field. Bound to the loopback address only: the page has no authentication.
"""

from __future__ import annotations

import json
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.review.page import PAGE_FILE, SAMPLE_FILE
from pipeline.review.verdicts import jsonl, parse_lines

HOST = "127.0.0.1"
VERDICTS_FILE = "verdicts.jsonl"
MAX_BODY_BYTES = 4 << 20


class ReviewHandler(SimpleHTTPRequestHandler):
    server: ReviewServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?", 1)[0].rstrip("/") not in ("/verdicts", "/" + VERDICTS_FILE):
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"POST verdicts to /verdicts, not {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": f"body must be 1 to {MAX_BODY_BYTES} bytes"})
            return
        try:
            text = self.rfile.read(length).decode("utf-8")
            verdicts = [v for _, v in parse_lines(text.splitlines(), "body")]
            expected = self.server.release
            for i, v in enumerate(verdicts, 1):
                if (v.dataset, v.version) != expected:
                    raise UserError(f"body:{i}: verdict for {v.dataset}/{v.version}, but this review is of "
                                    f"{expected[0]}/{expected[1]}")
        except (UserError, UnicodeDecodeError) as err:
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        total = self.server.append(jsonl(verdicts))
        self._answer(HTTPStatus.OK, {"saved": len(verdicts), "total": total})


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, port: int, verbose: bool = False) -> None:
        self.directory = directory
        self.verbose = verbose
        sample = json.loads((directory / SAMPLE_FILE).read_text(encoding="utf-8"))
        self.release = (str(sample["dataset"]), str(sample["version"]))
        self._lock = threading.Lock()
        super().__init__((HOST, port), partial(ReviewHandler, directory=str(directory)))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def append(self, lines: str) -> int:
        """Append verdict lines; the number of lines in the file after."""
        with self._lock:
            path = self.directory / VERDICTS_FILE
            with path.open("a", encoding="utf-8") as fh:
                fh.write(lines)
            return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def make_server(directory: str | Path, port: int = 0, verbose: bool = False) -> ReviewServer:
    """A server for the review page in ``directory`` (port 0: any free port); not yet serving."""
    d = Path(directory)
    if not (d / PAGE_FILE).is_file() or not (d / SAMPLE_FILE).is_file():
        raise UserError(f"{d}: no review page here ({PAGE_FILE} and {SAMPLE_FILE}; write one with xmodal review)")
    try:
        return ReviewServer(d, port, verbose)
    except OSError as err:
        raise UserError(f"cannot listen on {HOST}:{port}: {err.strerror or err}") from None
    except (ValueError, KeyError) as err:
        raise UserError(f"{d / SAMPLE_FILE}: not a review sample ({err})") from None
