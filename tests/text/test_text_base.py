"""tokenize_batch and pad_and_mask."""

import warnings

import numpy as np
import pytest

from glide_jax.text import pad_and_mask, tokenize_batch


def test_pad_and_mask():
    tokens, mask = pad_and_mask([3, 4], 4, pad_token=9)
    np.testing.assert_array_equal(tokens, [3, 4, 9, 9])
    np.testing.assert_array_equal(mask, [True, True, False, False])
    assert tokens.dtype == np.int32 and mask.dtype == bool


def test_batch_matches_rows_without_warning(gpt2_tokenizer):
    texts = ["a corgi", "", "An Astronaut"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens, mask = tokenize_batch(gpt2_tokenizer, texts, 8)
    assert tokens.shape == (3, 8) and tokens.dtype == np.int32
    assert mask.shape == (3, 8) and mask.dtype == bool
    for row, text in enumerate(texts):
        want_tokens, want_mask = gpt2_tokenizer.padded_tokens_and_mask(gpt2_tokenizer.encode(text), 8)
        np.testing.assert_array_equal(tokens[row], want_tokens)
        np.testing.assert_array_equal(mask[row], want_mask)
    assert not mask[1].any() and (tokens[1] == gpt2_tokenizer.pad_token).all()


def test_batch_warns_on_truncation(gpt2_tokenizer):
    long = "the quick brown fox jumps over the lazy dog " * 3
    with pytest.warns(UserWarning, match=r"1 of 2 captions exceed 8 tokens.*#1"):
        tokens, mask = tokenize_batch(gpt2_tokenizer, ["a dog", long], 8)
    assert mask[1].all()
    np.testing.assert_array_equal(tokens[1], gpt2_tokenizer.encode(long)[:8])


def test_clip_batch_counts_start_and_end(clip_tokenizer):
    # 3 word ids + start + end fill a row of 5 exactly: no truncation.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens, mask = tokenize_batch(clip_tokenizer, ["red blue green"], 5)
    assert mask.sum() == 5 and tokens[0, 0] == clip_tokenizer.start_token
    with pytest.warns(UserWarning, match="exceed 2 tokens"):
        tokenize_batch(clip_tokenizer, ["red blue green"], 4)


def test_batch_rejects_a_single_string(gpt2_tokenizer):
    with pytest.raises(TypeError, match="sequence of strings"):
        tokenize_batch(gpt2_tokenizer, "a corgi", 8)
