"""Text of the text–image datasets: the reference's cleaning, a tokenizer that really truncates.

The reference (IGM's `pre_caption`, ALBEF style) lowercases, strips `,.'!?"()*#:;~`,
turns `-` and `/` into spaces and keeps at most 50 words; for Twitter2015 it first keeps
only `[A-Za-z]+` runs (`clean_str`). It then tokenizes with `padding='longest'` and a
`max_length` that, without `truncation=True`, is ignored; here every sequence is padded
*and truncated* to `max_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")
SPACES = re.compile(r"\s{2,}")
LETTERS = re.compile(r"[A-Za-z]+")
ROWS = ("input_ids", "attention_mask", "token_type_ids")  # the rows of one stored text sample
MASK = "[MASK]"  # placeholder a dataset may put in cleaned text; becomes the tokenizer's mask token


def letters_only(text: str) -> str:
    """Twitter2015's first step: the `[A-Za-z]+` runs of the text, space-separated."""
    return " ".join(LETTERS.findall(text))


def clean_caption(text: str, max_words: int = 50) -> str:
    """Lowercase, strip punctuation, `-`/`/` → space, `<person>` → person, at most `max_words` words."""
    text = PUNCTUATION.sub("", text.lower()).replace("-", " ").replace("/", " ")
    text = SPACES.sub(" ", text.replace("<person>", "person")).strip()
    return " ".join(text.split(" ")[:max_words])


@dataclass(frozen=True)
class TextSpec:
    """How cleaned text becomes stored token rows (3, max_tokens) int32."""

    tokenizer: str
    max_tokens: int
    max_words: int = 50

    @property
    def shape(self) -> tuple[int, int]:
        """Per-sample stored shape: input ids, attention mask and token types, each max_tokens long."""
        return (len(ROWS), self.max_tokens)


def load_tokenizer(name: str) -> Any:
    """A tokenizer from a local folder or hub id; offline without it, a DataError naming --tokenizer."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        where = "folder" if Path(name).exists() else "hub id (no local copy; offline?)"
        raise DataError(
            f"--tokenizer {name}: cannot load this {where}: {str(e).splitlines()[0][:120]}; "
            "pass a local save_pretrained folder with --tokenizer PATH"
        ) from None


def vocabulary_hash(tokenizer: Any) -> str:
    """SHA-256 of the vocabulary (token → id, sorted): identifies what the stored ids mean."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_tokens: int) -> np.ndarray:
    """(N, 3, max_tokens) int32: ids, mask, token types, padded and truncated to max_tokens."""
    if not texts:
        return np.zeros((0, len(ROWS), max_tokens), np.int32)
    if any(MASK in t for t in texts) and tokenizer.mask_token != MASK:
        if tokenizer.mask_token is None:
            raise DataError("--target mask needs a tokenizer with a mask token")
        texts = [t.replace(MASK, tokenizer.mask_token) for t in texts]
    encoded = tokenizer(
        texts,
        pairs,
        padding="max_length",
        truncation="longest_first",
        max_length=max_tokens,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return np.stack([np.asarray(encoded[row], np.int32) for row in ROWS], axis=1)


def tokenizer_record(tokenizer: Any, spec: TextSpec) -> dict[str, Any]:
    """The tokenizer facts written into the manifest."""
    local = Path(spec.tokenizer).expanduser()
    return {
        "tokenizer": str(local.resolve()) if local.exists() else spec.tokenizer,  # a folder: its full path
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer.get_vocab()),
        "vocab_sha256": vocabulary_hash(tokenizer),
        "max_tokens": spec.max_tokens,
        "padding": "max_length",
        "truncation": "longest_first (the reference never truncates: it pads to the longest)",
        "stored": "text.npy (N, 3, max_tokens) int32: input_ids, attention_mask, token_type_ids",
        "pad_token_id": tokenizer.pad_token_id,
    }
