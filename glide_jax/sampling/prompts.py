"""Prompts -> token rows for the U-Nets and the noised CLIP.

Every prompt is tokenized once per `generate` call. A prompt longer than a
model's text context is cut to fit, with one `PromptTruncatedWarning` naming
the prompt; the empty prompt (classifier-free guidance's unconditional
branch and the batch padding) is `padded_tokens_and_mask([])`.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from glide_jax.sampling.errors import PromptTruncatedWarning


def _warn_truncated(prompt: str, n_ids: int, capacity: int, what: str) -> None:
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    warnings.warn(f"prompt {shown!r} has {n_ids} tokens; {what} keeps the first {capacity}",
                  PromptTruncatedWarning, stacklevel=3)


def tokenize(tokenizer, prompts: Sequence[str], text_ctx: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Token rows for a U-Net's text transformer.

    Args:
      tokenizer: a `glide_jax.text.Tokenizer`.
      prompts: N strings.
      text_ctx: row length L.
      what: names the model in the truncation warning ("the base model").

    Returns:
      tokens (N, L) int32 and mask (N, L) bool.
    """
    capacity = tokenizer.capacity(text_ctx)
    tokens = np.zeros((len(prompts), text_ctx), np.int32)
    mask = np.zeros((len(prompts), text_ctx), bool)
    for row, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt)
        if len(ids) > capacity:
            _warn_truncated(prompt, len(ids), capacity, what)
        tokens[row], mask[row] = tokenizer.padded_tokens_and_mask(ids, text_ctx)
    return tokens, mask


def tokenize_clip(tokenizer, prompts: Sequence[str], max_text_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows and lengths for the noised CLIP's text encoder.

    Returns:
      tokens (N, max_text_len) int32 ([start, ids, end, 0...]) and lens (N,) int32.
    """
    capacity = tokenizer.capacity(max_text_len)
    tokens = np.zeros((len(prompts), max_text_len), np.int32)
    lens = np.zeros((len(prompts),), np.int32)
    for row, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt)
        if len(ids) > capacity:
            _warn_truncated(prompt, len(ids), capacity, "CLIP")
        tokens[row], lens[row] = tokenizer.padded_tokens_and_len(ids, max_text_len)
    return tokens, lens
