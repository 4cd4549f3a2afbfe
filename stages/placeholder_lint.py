"""Stage ``placeholder_lint``: grammar v1 on ``content`` against the row's media refs.

Consumes ``content``, ``media`` (modality, num_tokens) and ``kind``. Produces no column.
Rejects with ``ERR_CROSS_MDL_TOKEN_FMT``: escaped sentinels in any form, unpaired, nested or
empty spans, mixed bodies, span count vs media refs per modality, body length vs
``num_tokens``, token ids outside the modality's vocabulary, ``<box>`` tags inside spans.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from schemas.placeholder_grammar import DEFAULT_VOCAB, Violation
from schemas.placeholders import PlaceholderLinter
from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows


def lint_verdicts(rows: pa.Table, linter: PlaceholderLinter) -> list[Violation | None]:
    return linter.check_columns(rows["content"], rows["media"], rows["kind"])


class PlaceholderLintParams(StageParams):
    image_vocab_size: int = Field(default=DEFAULT_VOCAB, gt=0, description="ids of <IMG_TK_n> must be below this")
    audio_vocab_size: int = Field(default=DEFAULT_VOCAB, gt=0, description="ids of <AUD_TK_n> must be below this")
    video_vocab_size: int = Field(default=DEFAULT_VOCAB, gt=0, description="ids of <VID_TK_n> must be below this")


class PlaceholderLint(Stage):
    name = "placeholder_lint"
    params_model = PlaceholderLintParams
    resources = Resources(num_cpus=0.5, batch_size=1024)
    error_code: ClassVar[ReasonCode] = ReasonCode.TOKEN_FMT

    def setup(self) -> None:
        p = self.params
        if not isinstance(p, PlaceholderLintParams):  # narrow for type checkers
            raise TypeError(type(p))
        self.linter = PlaceholderLinter(
            {"image": p.image_vocab_size, "audio": p.audio_vocab_size, "video": p.video_vocab_size}
        )

    def process(self, rows: pa.Table) -> pa.Table:
        verdicts = [
            Verdict(ReasonCode.TOKEN_FMT, v.detail) if v is not None else None for v in lint_verdicts(rows, self.linter)
        ]
        return reject_rows(rows, verdicts, self.name)
