"""get_tokenizer: selection by config.text and its errors."""

import ml_collections
import pytest

from glide_jax import config as config_lib
from glide_jax.text import CLIPTokenizer, GPT2Tokenizer, SentencePieceTokenizer, Tokenizer, get_tokenizer
from glide_jax.text import model_tokenizer
from glide_jax.text import train_sentencepiece


def _text(**overrides) -> ml_collections.ConfigDict:
    text = config_lib.text_defaults()
    text.update(overrides)
    return text


def test_default_config_gives_glide_tokenizer():
    tok = get_tokenizer(config_lib.base_config().text)
    assert isinstance(tok, GPT2Tokenizer) and isinstance(tok, Tokenizer)
    assert tok.n_vocab == config_lib.base_config().text.n_vocab


def test_clip():
    tok = get_tokenizer(_text(tokenizer="clip"))
    assert isinstance(tok, CLIPTokenizer) and isinstance(tok, Tokenizer)


def test_sentencepiece(tmp_path):
    path = train_sentencepiece(["a red dog", "a blue cat", "the red cat and the blue dog"] * 20, 16,
                               tmp_path / "sp.model")
    tok = get_tokenizer(_text(tokenizer="sentencepiece", tokenizer_path=str(path)))
    assert isinstance(tok, SentencePieceTokenizer) and isinstance(tok, Tokenizer)
    assert tok.n_vocab == 16


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"config\.text\.tokenizer = 'wordpiece'"):
        get_tokenizer(_text(tokenizer="wordpiece"))
    with pytest.raises(ValueError, match=r"config\.text\.tokenizer_path"):
        get_tokenizer(_text(tokenizer="sentencepiece", tokenizer_path=None))
    missing = tmp_path / "nowhere.model"
    with pytest.raises(FileNotFoundError, match=r"config\.text\.tokenizer_path = .*nowhere\.model"):
        get_tokenizer(_text(tokenizer="sentencepiece", tokenizer_path=str(missing)))
    with pytest.raises(ValueError, match=r"n_vocab = 1000: .* has 1000 rows but the gpt2 tokenizer has 50257 ids"):
        get_tokenizer(_text(tokenizer="gpt2", n_vocab=1000))
    with pytest.raises(KeyError, match="pass config.text"):
        get_tokenizer(config_lib.base_config())


def test_model_tokenizer_checks_the_embedding_it_feeds():
    config = config_lib.base_config()
    config.model.kind = "clip"
    assert isinstance(model_tokenizer(config), CLIPTokenizer)  # whatever config.text says
    config.clip.n_vocab = 1000
    with pytest.raises(config_lib.ConfigError, match=r"config\.clip\.n_vocab = 1000: the model's token embedding has 1000 rows "
                                          r"but the clip tokenizer has 49408 ids"):
        model_tokenizer(config)
