"""CLIP BPE against glide-text2im's SimpleTokenizer fixtures."""

import numpy as np
import pytest

from glide_jax.text.clip import clean_text


def test_matches_reference_ids(clip_tokenizer, tokenizer_prompts, clip_arrays):
    for i, prompt in enumerate(tokenizer_prompts["prompts"]):
        n = int(clip_arrays["lengths"][i])
        ids = clip_tokenizer.encode(prompt)
        assert len(ids) == n, prompt
        np.testing.assert_array_equal(ids, clip_arrays["ids"][i, :n], err_msg=prompt)


def test_matches_reference_rows_and_decode(clip_tokenizer, tokenizer_prompts, clip_arrays):
    text_ctx = clip_arrays["padded_tokens"].shape[1]
    for i, prompt in enumerate(tokenizer_prompts["prompts"]):
        ids = clip_tokenizer.encode(prompt)
        tokens, text_len = clip_tokenizer.padded_tokens_and_len(ids, text_ctx)
        assert tokens.dtype == np.int32 and tokens.shape == (text_ctx,)
        np.testing.assert_array_equal(tokens, clip_arrays["padded_tokens"][i])
        assert text_len == clip_arrays["text_len"][i]
        assert clip_tokenizer.decode(ids) == tokenizer_prompts["clip"]["decoded"][i]


def test_vocabulary_constants(clip_tokenizer, tokenizer_prompts):
    meta = tokenizer_prompts["clip"]
    assert clip_tokenizer.n_vocab == meta["vocab_size"] == 49408
    assert (clip_tokenizer.start_token, clip_tokenizer.end_token) == (meta["start_token"], meta["end_token"])
    assert clip_tokenizer.pad_token == 0


def test_cleaning():
    assert clean_text("  A\t&amp;amp;  B\n") == "a & b"
    assert clean_text("") == ""


def test_special_tokens_written_in_text(clip_tokenizer):
    ids = clip_tokenizer.encode("<|startoftext|>dog<|endoftext|>")
    assert ids[0] == clip_tokenizer.start_token and ids[-1] == clip_tokenizer.end_token
    assert ids[1:-1] == clip_tokenizer.encode("dog")


def test_row_layout_truncation_and_mask(clip_tokenizer):
    start, end = clip_tokenizer.start_token, clip_tokenizer.end_token
    tokens, text_len = clip_tokenizer.padded_tokens_and_len([7, 8], 6)
    np.testing.assert_array_equal(tokens, [start, 7, 8, end, 0, 0])
    assert text_len == 4
    tokens, text_len = clip_tokenizer.padded_tokens_and_len(list(range(1, 10)), 5)
    np.testing.assert_array_equal(tokens, [start, 1, 2, 3, end])
    assert text_len == 5
    tokens, mask = clip_tokenizer.padded_tokens_and_mask([7, 8], 6)
    np.testing.assert_array_equal(tokens, [start, 7, 8, end, 0, 0])
    np.testing.assert_array_equal(mask, [True, True, True, True, False, False])
    assert clip_tokenizer.capacity(77) == 75
    with pytest.raises(ValueError, match="text_ctx"):
        clip_tokenizer.padded_tokens_and_len([1], 1)


def test_decode_rejects_unknown_ids(clip_tokenizer):
    with pytest.raises(ValueError, match="49408"):
        clip_tokenizer.decode([49408])
