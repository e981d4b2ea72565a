"""The interface every tokenizer implements, padding, and batch tokenization.

All tokenizers map a caption to a list of ids and turn that list into a
fixed-length row for the text transformer: `padded_tokens_and_mask(ids,
text_ctx)` gives `tokens` (text_ctx,) int32 and `mask` (text_ctx,) bool, where
the mask is True exactly on the positions that hold caption tokens and the rest
holds `pad_token`. `tokenize_batch` does this for a list of captions and warns
when captions are cut.
"""

from __future__ import annotations

import warnings
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    """What `glide_jax.text.get_tokenizer` returns."""

    @property
    def n_vocab(self) -> int:
        """Number of ids; the embedding table needs this many rows."""

    @property
    def pad_token(self) -> int:
        """Id written into padded positions."""

    def encode(self, text: str) -> list[int]:
        """Caption -> ids, without padding."""

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text."""

    def capacity(self, text_ctx: int) -> int:
        """How many caption ids fit into a row of `text_ctx` tokens."""

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids -> (tokens (text_ctx,) int32, mask (text_ctx,) bool)."""


def check_text(text: str) -> str:
    """`text`, or a TypeError naming what was passed instead of one caption."""
    if not isinstance(text, str):
        hint = " (tokenize a list with tokenize_batch)" if isinstance(text, (list, tuple)) else ""
        raise TypeError(f"text must be a string, got {type(text).__name__}{hint}")
    return text


def check_text_ctx(text_ctx: int, minimum: int = 1) -> int:
    """Validates a context length; returns it as an int."""
    if isinstance(text_ctx, bool) or not isinstance(text_ctx, (int, np.integer)) or text_ctx < minimum:
        raise ValueError(f"text_ctx = {text_ctx!r}: must be an integer >= {minimum}")
    return int(text_ctx)


def pad_and_mask(ids: Sequence[int], text_ctx: int, pad_token: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncates `ids` to `text_ctx`, pads with `pad_token`, masks the real ids.

    This is glide-text2im's `padded_tokens_and_mask`, returning numpy arrays.

    Args:
      ids: caption ids.
      text_ctx: row length.
      pad_token: id for the padded positions.

    Returns:
      tokens: (text_ctx,) int32.
      mask: (text_ctx,) bool, True on the first min(len(ids), text_ctx) positions.
    """
    text_ctx = check_text_ctx(text_ctx)
    kept = list(ids)[:text_ctx]
    tokens = np.full((text_ctx,), pad_token, dtype=np.int32)
    tokens[: len(kept)] = kept
    mask = np.arange(text_ctx) < len(kept)
    return tokens, mask


def tokenize_batch(tokenizer: Tokenizer, texts: Sequence[str], text_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes and pads a list of captions.

    Emits one `UserWarning` per call if any caption is longer than the row
    (`tokenizer.capacity(text_ctx)` ids) and therefore truncated.

    Args:
      tokenizer: any `Tokenizer`.
      texts: B captions.
      text_ctx: row length L.

    Returns:
      tokens: (B, L) int32.
      mask: (B, L) bool.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    text_ctx = check_text_ctx(text_ctx)
    tokens = np.zeros((len(texts), text_ctx), dtype=np.int32)
    mask = np.zeros((len(texts), text_ctx), dtype=bool)
    limit = tokenizer.capacity(text_ctx)
    truncated = []
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if len(ids) > limit:
            truncated.append((row, len(ids)))
        tokens[row], mask[row] = tokenizer.padded_tokens_and_mask(ids, text_ctx)
    if truncated:
        detail = ", ".join(f"#{row} ({n} ids)" for row, n in truncated[:8])
        more = "" if len(truncated) <= 8 else f" and {len(truncated) - 8} more"
        warnings.warn(f"{len(truncated)} of {len(texts)} captions exceed {limit} tokens "
                      f"(text_ctx={text_ctx}) and were truncated: {detail}{more}", stacklevel=2)
    return tokens, mask
