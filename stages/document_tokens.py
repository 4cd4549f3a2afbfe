"""Token counts of texts with placeholders, as ``document_interleave`` and ``xmodal mix`` count.

Each placeholder marker (sentinel, pad or discrete token, ``<box>`` tag) is one token; the text
between markers is counted by the tokenizer: ``whitespace`` (words, RE2 in pyarrow compute) or
the path of a ``tokenizers`` JSON file (nothing is downloaded).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MARKER_PATTERN = r"<\|(?:image|audio|video)_(?:start|end|pad)\|>|<(?:IMG|AUD|VID)_TK_[0-9]+>|</?box>"
WORD_PATTERN = r"[^\s\v\p{Z}]+"  # RE2: a word is a run of anything but whitespace and Unicode spaces


class TokenCounter:
    """Token counts of texts with placeholders: a marker is one token, the rest goes to the
    tokenizer (``whitespace`` or a ``tokenizers`` JSON file; nothing is downloaded)."""

    def __init__(self, tokenizer: str = "whitespace") -> None:
        self.name = tokenizer
        self._hf: Any = None
        if tokenizer != "whitespace":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(tokenizer)

    def count_column(self, content: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Vectorised counts of a string column (null counts 0)."""
        markers = pc.fill_null(pc.count_substring_regex(content, MARKER_PATTERN), 0).to_numpy(zero_copy_only=False)
        if self._hf is None:
            text = pc.replace_substring_regex(content, MARKER_PATTERN, " ")
            words = pc.fill_null(pc.count_substring_regex(text, WORD_PATTERN), 0)
            return np.asarray(markers, np.int64) + words.to_numpy(zero_copy_only=False).astype(np.int64)
        texts = [re.sub(MARKER_PATTERN, " ", t or "") for t in content.to_pylist()]
        lengths = [len(e.ids) for e in self._hf.encode_batch(texts, add_special_tokens=False)]
        return np.asarray(markers, np.int64) + np.asarray(lengths, np.int64)

    def count(self, texts: Sequence[str]) -> list[int]:
        return self.count_column(pa.array(list(texts), pa.string())).tolist() if texts else []
