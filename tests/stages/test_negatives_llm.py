"""LLM negatives against a real HTTP server on 127.0.0.1 that speaks the chat-completions API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from schemas.reason_codes import ReasonCode
from stages.negatives_filter import NegativesFilter
from stages.negatives_llm import ChatNegativeGenerator, LlmError, NegativesLlm, clean_answer
from stages.registry import get_stage_class
from tests.stages.negative_rows import by_id, shapes_record, shapes_table, write_tiny_clip


class ChatServer(ThreadingHTTPServer):
    """Answers ``POST /v1/chat/completions`` deterministically: the first "red" of the caption
    becomes "blue", else the first "left" becomes "right", else the caption comes back unchanged
    (a useless answer the filter must drop). ``fail_next`` answers that many requests with 503."""

    requests: list[dict[str, Any]]
    fail_next: int = 0


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "tiny-negatives", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({**request, "authorization": self.headers.get("Authorization")})
        if self.server.fail_next > 0:
            self.server.fail_next -= 1
            self._send(503, {"error": "busy"})
            return
        caption = request["messages"][-1]["content"]
        answer = caption.replace("red", "blue", 1) if "red" in caption else caption.replace("left", "right", 1)
        choices = [{"index": i, "message": {"role": "assistant", "content": f'"{answer}"\n'}, "finish_reason": "stop"}
                   for i in range(request.get("n", 1))]
        self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                         "model": request["model"], "choices": choices,
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture()
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer(("127.0.0.1", 0), ChatHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def endpoint(server: ChatServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def rows(root: Path) -> pa.Table:
    return shapes_table(root, [
        shapes_record(root, "o1", [("red", "circle", 60, 60, 30), ("blue", "square", 180, 110, 25)],
                      "A <box>red circle</box> and a <box>blue square</box>.",
                      captions=["Two shapes on paper."]),
    ])


def test_stage_asks_the_endpoint_and_the_filter_drops_useless_answers(
        tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMODAL_TEST_LLM_KEY", "sekrit")
    stage = NegativesLlm({"endpoint": endpoint(chat_server), "model": "tiny-negatives",
                          "api_key_env": "XMODAL_TEST_LLM_KEY"})
    out = stage(rows(tmp_path))
    got = [(r["id"], r["parent_id"], r["negative_type"], r["negative_text"], r["positive_text"], r["negative_edit"])
           for r in out.to_pylist()]
    assert got == [
        ("o1", None, None, None, None, None),
        ("o1-llmneg0", "o1", "llm", "A blue circle and a blue square.", "A red circle and a blue square.",
         "llm tiny-negatives"),
        ("o1-llmneg1", "o1", "llm", "Two shapes on paper.", "Two shapes on paper.", "llm tiny-negatives"),
    ]
    assert [r["messages"][-1]["content"] for r in chat_server.requests] == [
        "A red circle and a blue square.", "Two shapes on paper."]
    first = chat_server.requests[0]
    assert (first["model"], first["n"], first["temperature"], first["seed"], first["authorization"]) == (
        "tiny-negatives", 1, 0.0, 0, "Bearer sekrit")
    assert first["messages"][0]["role"] == "system"
    # The same false-negative filter as every other negative: an answer that repeats the caption goes.
    filtered = by_id(NegativesFilter({"checkpoint": str(write_tiny_clip(tmp_path / "clip")), "mine_k": 0})(out))
    echo = filtered["o1-llmneg1"]
    assert (echo["status"], echo["reject_code"], echo["negative_verdict"]) == (
        "rejected", str(ReasonCode.HARD_NEG), "duplicate")
    assert filtered["o1-llmneg0"]["negative_verdict"] != "duplicate"
    assert filtered["o1-llmneg0"]["negative_similarity"] is not None


def test_retries_busy_answers_and_gives_up_cleanly(chat_server: ChatServer) -> None:
    generator = ChatNegativeGenerator(endpoint(chat_server), "tiny-negatives", max_retries=2)
    chat_server.fail_next = 2
    assert generator.complete("The red circle is left of the square.", 2) == [
        "The blue circle is left of the square.", "The blue circle is left of the square."]
    assert len(chat_server.requests) == 3
    chat_server.fail_next = 3
    with pytest.raises(LlmError, match="HTTP 503"):
        generator.complete("A circle left of a square.", 1)


def test_stage_refuses_an_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens on this port any more
    with pytest.raises(LlmError, match="does not answer"):
        NegativesLlm({"endpoint": f"http://127.0.0.1:{port}/v1", "model": "m", "timeout_s": 2})(rows(tmp_path))
    with pytest.raises(ValidationError):
        NegativesLlm({"model": "m"})  # off unless an endpoint is configured
    assert get_stage_class("negatives_llm") is NegativesLlm
    with pytest.raises(ValueError, match="XMODAL_NOT_SET"):
        NegativesLlm({"endpoint": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "XMODAL_NOT_SET"})(
            rows(tmp_path))


def test_clean_answer() -> None:
    assert clean_answer('  "A blue circle ."  \nExplanation: I changed red.') == "A blue circle."
    assert clean_answer("Caption: A small square.") == "A small square."
    assert clean_answer("\n\n") == ""
