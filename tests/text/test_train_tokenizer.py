"""python -m glide_jax.text.train_tokenizer: config -> SentencePiece model file."""

import pytest

from glide_jax import config as config_lib
from glide_jax.text import SentencePieceTokenizer, get_tokenizer
from glide_jax.text import train_tokenizer

_CONFIG_FILE = '''
from glide_jax import config as config_lib


def get_config():
    config = config_lib.base_config()
    config.data.dataset = "glide_shapes"
    config.data.shapes_train_size = 300
    config.text.tokenizer = "sentencepiece"
    config.text.tokenizer_path = {path!r}
    config.text.sp_vocab_size = 48
    config.text.n_vocab = 48
    return config
'''


def _config(tmp_path, **text):
    config = config_lib.base_config()
    config.text.tokenizer_path = str(tmp_path / "out" / "sp.model")
    config.text.sp_vocab_size = 24
    config.text.update(text)
    return config


def _captions(config):
    return ["a red dog on a blue hat", "the small cat rides a large horse", "an oil painting of a corgi"] * 30


def test_train_from_config(tmp_path):
    config = _config(tmp_path, sp_model_type="bpe")
    path = train_tokenizer.train_from_config(config, captions_fn=_captions)
    assert str(path) == config.text.tokenizer_path
    tok = SentencePieceTokenizer(path)
    assert tok.n_vocab == 24
    assert tok.decode(tok.encode("A Red Dog")) == "a red dog"


def test_train_from_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"config\.text\.tokenizer_path"):
        train_tokenizer.train_from_config(_config(tmp_path, tokenizer_path=None), captions_fn=_captions)
    with pytest.raises(ValueError, match=r"config\.text \(sp_vocab_size=5000"):
        train_tokenizer.train_from_config(_config(tmp_path, sp_vocab_size=5000), captions_fn=_captions)
    config = _config(tmp_path)
    del config.text["sp_model_type"]
    with pytest.raises(KeyError, match=r"config\.text\.sp_model_type"):
        train_tokenizer.train_from_config(config, captions_fn=_captions)


def test_cli_end_to_end_on_glide_shapes(tmp_path, capsys):
    model_path = tmp_path / "tok" / "shapes.model"
    config_file = tmp_path / "shapes_sp.py"
    config_file.write_text(_CONFIG_FILE.format(path=str(model_path)))
    assert train_tokenizer.main(["--config", str(config_file)]) == 0
    assert str(model_path) in capsys.readouterr().out
    smaller = tmp_path / "tok" / "smaller.model"
    assert train_tokenizer.main(["--config", str(config_file), "--config.text.sp_vocab_size=40",
                                 f"--config.text.tokenizer_path={smaller}"]) == 0
    assert SentencePieceTokenizer(smaller).n_vocab == 40
    assert train_tokenizer.main(["--config", str(config_file), "--config.text.sp_vocab=40"]) == 2
    assert "error: --config.text.sp_vocab=40: config.text.sp_vocab does not exist" in capsys.readouterr().err
    # An existing model is not replaced without --force (a run trained with it would read other ids).
    before = model_path.read_bytes()
    assert train_tokenizer.main(["--config", str(config_file), "--config.text.sp_vocab_size=40"]) == 2
    assert "shapes.model' exists" in capsys.readouterr().err and model_path.read_bytes() == before
    assert train_tokenizer.main(["--config", str(config_file), "--config.text.sp_vocab_size=5000", "--force"]) == 2
    assert capsys.readouterr().err.startswith("error: config.text (sp_vocab_size=5000")
    assert train_tokenizer.main(["--config", str(tmp_path / "absent.py")]) == 2
    assert "absent.py does not exist" in capsys.readouterr().err
    config = config_lib.load_config_file(str(config_file))
    tok = get_tokenizer(config.text)
    assert tok.n_vocab == config.text.sp_vocab_size == 48
    caption = "a small red circle in the center on a teal background"
    ids = tok.encode(caption)
    assert tok.unk_token not in ids
    assert tok.decode(ids) == caption
