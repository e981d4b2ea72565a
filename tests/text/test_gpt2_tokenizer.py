"""GLIDE's GPT-2 BPE against glide-text2im's recorded ids, rows and decodes."""

import gzip
import json

import numpy as np
import pytest

from glide_jax.text import GPT2Tokenizer


def test_matches_reference_ids(gpt2_tokenizer, tokenizer_prompts, glide_arrays):
    for i, prompt in enumerate(tokenizer_prompts["prompts"]):
        n = int(glide_arrays["lengths"][i])
        ids = gpt2_tokenizer.encode(prompt)
        assert len(ids) == n, prompt
        np.testing.assert_array_equal(ids, glide_arrays["ids"][i, :n], err_msg=prompt)


def test_matches_reference_rows_and_decode(gpt2_tokenizer, tokenizer_prompts, glide_arrays):
    text_ctx = glide_arrays["padded_tokens"].shape[1]
    for i, prompt in enumerate(tokenizer_prompts["prompts"]):
        ids = gpt2_tokenizer.encode(prompt)
        tokens, mask = gpt2_tokenizer.padded_tokens_and_mask(ids, text_ctx)
        assert tokens.dtype == np.int32 and tokens.shape == (text_ctx,)
        assert mask.dtype == bool and mask.shape == (text_ctx,)
        np.testing.assert_array_equal(tokens, glide_arrays["padded_tokens"][i])
        np.testing.assert_array_equal(mask, glide_arrays["mask"][i])
        assert gpt2_tokenizer.decode(ids) == tokenizer_prompts["glide"]["decoded"][i]


def test_vocabulary_constants(gpt2_tokenizer, tokenizer_prompts):
    assert gpt2_tokenizer.n_vocab == tokenizer_prompts["glide"]["n_vocab"] == 50257
    assert gpt2_tokenizer.pad_token == gpt2_tokenizer.end_token == tokenizer_prompts["glide"]["end_token"]


def test_lowercases_and_has_no_special_tokens(gpt2_tokenizer):
    assert gpt2_tokenizer.encode("A CORGI") == gpt2_tokenizer.encode("a corgi")
    assert gpt2_tokenizer.encode("") == []
    assert gpt2_tokenizer.end_token not in gpt2_tokenizer.encode("<|endoftext|>")


def test_padding_and_truncation(gpt2_tokenizer):
    tokens, mask = gpt2_tokenizer.padded_tokens_and_mask([5, 6, 7], 5)
    np.testing.assert_array_equal(tokens, [5, 6, 7, 50256, 50256])
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    tokens, mask = gpt2_tokenizer.padded_tokens_and_mask(list(range(10)), 4)
    np.testing.assert_array_equal(tokens, [0, 1, 2, 3])
    assert mask.all()
    tokens, mask = gpt2_tokenizer.padded_tokens_and_mask([], 3)
    np.testing.assert_array_equal(tokens, [50256] * 3)
    assert not mask.any()
    with pytest.raises(ValueError, match="text_ctx"):
        gpt2_tokenizer.padded_tokens_and_mask([1], 0)


def test_decode_rejects_unknown_ids(gpt2_tokenizer):
    with pytest.raises(ValueError, match="50257"):
        gpt2_tokenizer.decode([1, 50257])


def test_tiny_vocabulary_from_files(tmp_path):
    # A hand-made vocabulary: bytes of "ab" and " ", merges "a b" then "Ġ ab".
    encoder = {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4, "<|endoftext|>": 5}
    enc_path, bpe_path = tmp_path / "encoder.json.gz", tmp_path / "vocab.bpe.gz"
    with gzip.open(enc_path, "wt", encoding="utf-8") as f:
        json.dump(encoder, f)
    with gzip.open(bpe_path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\na b\nĠ ab\n")
    tok = GPT2Tokenizer.from_files(enc_path, bpe_path)
    assert tok.n_vocab == 6 and tok.pad_token == 5
    assert tok.encode("AB ab ba") == [3, 4, 2, 1, 0]
    assert tok.decode([3, 4]) == "ab ab"
