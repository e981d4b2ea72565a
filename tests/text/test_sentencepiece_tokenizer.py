"""SentencePiece training, loading, padding and round trips."""

import random

import numpy as np
import pytest

from glide_jax.text import SentencePieceTokenizer, tokenize_batch, train_sentencepiece
from glide_jax.text.sentencepiece_tokenizer import PAD_ID, UNK_ID

_WORDS = ("a an the dog cat red blue painting of photo astronaut riding horse on moon "
          "with hat small large oil corgi").split()


def _captions(n=300, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "nested" / "captions.model"
    return train_sentencepiece(_captions() + ["", "   "], 40, path)


def test_train_writes_loadable_model(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    assert sp_model.is_file() and tok.n_vocab == 40
    assert tok.pad_token == PAD_ID == 0 and tok.unk_token == UNK_ID == 1


def test_roundtrip_lowercases(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    ids = tok.encode("A Red Dog riding a horse on the moon")
    assert ids and all(2 <= i < tok.n_vocab for i in ids)
    assert tok.decode(ids) == "a red dog riding a horse on the moon"


def test_padding_and_mask(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    ids = tok.encode("red dog")
    tokens, mask = tok.padded_tokens_and_mask(ids, len(ids) + 3)
    np.testing.assert_array_equal(tokens, ids + [PAD_ID] * 3)
    np.testing.assert_array_equal(mask, [True] * len(ids) + [False] * 3)
    with pytest.warns(UserWarning, match="truncated"):
        tokens, mask = tokenize_batch(tok, ["red dog " * 20], 4)
    assert mask.all() and tokens.shape == (1, 4)
    assert tok.decode(list(ids) + [PAD_ID, PAD_ID]) == tok.decode(ids)


def test_training_is_deterministic(sp_model, tmp_path):
    again = train_sentencepiece(_captions() + ["", "   "], 40, tmp_path / "again.model")
    assert again.read_bytes() == sp_model.read_bytes()


def test_max_captions_limits_the_corpus(tmp_path):
    # 40 ids fit 300 captions but not 3 of them: the limit must reach the trainer.
    with pytest.raises(ValueError, match="on 3 captions"):
        train_sentencepiece(_captions(), 40, tmp_path / "few.model", max_captions=3)
    path = train_sentencepiece(_captions(), 40, tmp_path / "bpe.model", model_type="bpe")
    assert SentencePieceTokenizer(path).n_vocab == 40


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=5000"):
        train_sentencepiece(_captions(), 5000, tmp_path / "big.model")
    with pytest.raises(ValueError, match="no non-empty captions"):
        train_sentencepiece(["", " "], 40, tmp_path / "empty.model")
    with pytest.raises(ValueError, match="model_type"):
        train_sentencepiece(_captions(), 40, tmp_path / "x.model", model_type="wordpiece")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    assert not (tmp_path / "big.model").exists()
