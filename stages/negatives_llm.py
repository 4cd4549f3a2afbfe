"""Stage ``negatives_llm``: synthetic negatives from an OpenAI-compatible chat endpoint (vLLM, ...).

Off by default: the stage runs only when listed in the config, and then needs ``endpoint`` (the
API base, e.g. ``http://127.0.0.1:8000/v1``) and ``model``. Consumes ok rows of ``kinds`` that
are not negatives; for each of the first ``max_captions`` positive captions it POSTs one
``/chat/completions`` request (``system_prompt`` + the caption, ``n=per_caption``,
``temperature``, ``seed``) and adds one row per distinct non-empty answer: ``id``
``<id>-llmneg<k>``, ``parent_id`` = the source id, ``negative_type="llm"``, ``negative_text``,
``positive_text``, ``negative_edit`` (``llm <model>``). Answers are not trusted: they pass the
same false-negative filter as every other negative (``negatives_filter``), which drops an
answer that repeats the caption or is too close to it.

Setup checks that the endpoint answers (``GET <endpoint>/models``; a 404 is fine, a refused
connection is not). A request that fails after ``max_retries`` retries (connection errors, 429
and 5xx, with exponential backoff) is logged and that caption gets no LLM negative; source rows
pass unchanged and nothing is rejected. ``api_key_env`` names the environment variable holding
the bearer token, when the server wants one.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from schemas.records import STATUS_OK
from stages.base import Resources, Stage, StageParams
from stages.caption_edits import clean_caption, positive_captions
from stages.negatives_mining import NEGATIVE_FIELDS

log = logging.getLogger(__name__)
NEGATIVE_TYPE = "llm"
DEFAULT_PROMPT = (
    "You write hard negative captions for image-text training. Rewrite the caption so that it "
    "changes exactly one attribute (a colour, a size, a count, an object or a spatial relation) "
    "and no longer describes the same image. Keep everything else and keep it grammatical. "
    "Reply with the rewritten caption only."
)


class LlmError(RuntimeError):
    """The endpoint could not be reached or answered something that is not a chat completion."""


class ChatNegativeGenerator:
    """Calls ``POST <endpoint>/chat/completions`` of an OpenAI-compatible server."""

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 max_retries: int = 2, temperature: float = 0.0, max_tokens: int = 64, seed: int | None = 0,
                 system_prompt: str = DEFAULT_PROMPT) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.model, self.api_key, self.timeout_s, self.max_retries = model, api_key, timeout_s, max_retries
        self.temperature, self.max_tokens, self.seed, self.system_prompt = temperature, max_tokens, seed, system_prompt

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def check(self) -> None:
        """Raise :class:`LlmError` when nothing answers at the endpoint."""
        request = urllib.request.Request(f"{self.endpoint}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: some servers have no /models
        except (urllib.error.URLError, OSError) as exc:
            raise LlmError(f"LLM endpoint {self.endpoint} does not answer: {exc}") from None

    def complete(self, caption: str, n: int) -> list[str]:
        """Up to ``n`` rewritten captions (cleaned; empty answers dropped)."""
        body: dict[str, Any] = {
            "model": self.model, "n": n, "temperature": self.temperature, "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": caption}],
        }
        if self.seed is not None:
            body["seed"] = self.seed
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(f"{self.endpoint}/chat/completions", data=data, headers=self._headers(),
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = json.loads(response.read())
                break
            except urllib.error.HTTPError as exc:
                if (exc.code != 429 and exc.code < 500) or attempt == self.max_retries:
                    raise LlmError(f"LLM endpoint answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.max_retries:
                    raise LlmError(f"LLM endpoint {self.endpoint} failed: {exc}") from None
            except json.JSONDecodeError as exc:
                raise LlmError(f"LLM endpoint answered non-JSON: {exc}") from None
            time.sleep(0.25 * 2**attempt)
        try:
            answers = [choice["message"]["content"] or "" for choice in payload["choices"]]
        except (KeyError, TypeError) as exc:
            raise LlmError(f"not a chat completion: missing {exc}") from None
        return [text for text in (clean_answer(a) for a in answers[:n]) if text]


def clean_answer(text: str) -> str:
    """The first non-empty line of an answer, without quotes or a "Caption:" label."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0]
    if ":" in line[:24] and line.split(":", 1)[0].strip().lower() in ("caption", "negative", "rewritten caption"):
        line = line.split(":", 1)[1]
    return clean_caption(line.strip().strip("\"'“”‘’`").strip())


class NegativesLlmParams(StageParams):
    """The endpoint and how to ask it."""

    endpoint: str = Field(pattern=r"^https?://", description="API base of an OpenAI-compatible server, e.g. .../v1")
    model: str = Field(min_length=1, description="model name the server serves")
    api_key_env: str | None = Field(default=None, description="environment variable with the bearer token")
    system_prompt: str = DEFAULT_PROMPT
    per_caption: int = Field(default=1, ge=1, le=8, description="answers asked for per caption (n)")
    max_captions: int = Field(default=4, ge=1, description="captions per row sent to the endpoint")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=64, ge=1)
    seed: int | None = 0
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    kinds: tuple[str, ...] = ("object",)


class NegativesLlm(Stage):
    """LLM-written negatives (see the module docstring)."""

    name: ClassVar[str] = "negatives_llm"
    params_model: ClassVar[type[StageParams]] = NegativesLlmParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=64, actors=(1, 1))
    output_fields: ClassVar[tuple[pa.Field, ...]] = NEGATIVE_FIELDS
    params: NegativesLlmParams

    def setup(self) -> None:
        p = self.params
        api_key = None
        if p.api_key_env:
            api_key = os.environ.get(p.api_key_env)
            if not api_key:
                raise ValueError(f"negatives_llm: environment variable {p.api_key_env} is not set")
        self.generator = ChatNegativeGenerator(p.endpoint, p.model, api_key, p.timeout_s, p.max_retries,
                                               p.temperature, p.max_tokens, p.seed, p.system_prompt)
        self.generator.check()

    def process(self, rows: pa.Table) -> pa.Table:
        p = self.params
        new_rows: list[dict[str, Any]] = []
        failures = calls = 0
        for row in rows.to_pylist():
            if row.get("kind") not in p.kinds or row.get("negative_type") is not None:
                continue
            made: set[str] = set()
            for caption in positive_captions(row)[:p.max_captions]:
                calls += 1
                try:
                    answers = self.generator.complete(caption, p.per_caption)
                except LlmError as exc:
                    failures += 1
                    log.warning("negatives_llm: row %s: %s", row["id"], exc)
                    continue
                for text in answers:
                    if text in made:
                        continue
                    made.add(text)
                    new_rows.append({
                        **row, "id": f"{row['id'][:114]}-llmneg{len(made) - 1}", "parent_id": row["id"],
                        "status": STATUS_OK, "reject_stage": None, "reject_code": None, "reject_detail": None,
                        "negative_type": NEGATIVE_TYPE, "negative_text": text, "negative_media": None,
                        "positive_text": caption, "negative_edit": f"llm {p.model}",
                    })
        if failures:
            log.error("negatives_llm: %d of %d requests failed", failures, calls)
        if not new_rows:
            return rows
        return pa.concat_tables([rows, pa.Table.from_pylist(new_rows, schema=rows.schema)])
