"""count_params on the presets (jax.eval_shape only, nothing allocated)."""

import pathlib

import pytest

from glide_jax import config as config_lib
from glide_jax.tools import count_params

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name, expected", [
    ("glide_base.py", 385030726),
    ("glide_upsample.py", 398361286),
])
def test_released_presets_exact(name, expected):
    lines = []
    assert count_params.main([str(CONFIGS / name)], out=lines.append) == 0
    assert lines == [f"params: {expected}"]


@pytest.mark.parametrize("name, paper", [("paper_base.py", 3.5e9), ("paper_upsample.py", 1.5e9)])
def test_paper_presets_within_five_percent(name, paper):
    count = count_params.count_params(config_lib.load_config_file(str(CONFIGS / name)))
    assert abs(count - paper) / paper <= 0.05


def test_config_file_errors(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="absent.py does not exist"):
        config_lib.load_config_file(str(tmp_path / "absent.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(config_lib.ConfigError, match="defines no get_config"):
        config_lib.load_config_file(str(empty))
    assert count_params.main([str(tmp_path / "absent.py")]) == 2


def test_config_file_argument(tmp_path):
    path = tmp_path / "with_arg.py"
    path.write_text("from glide_jax import config as c\n"
                    "def get_config(arg=None):\n"
                    "    cfg = c.base_config()\n"
                    "    cfg.model.image_size = int(arg) if arg else 64\n"
                    "    return cfg\n")
    assert config_lib.load_config_file(f"{path}:32").model.image_size == 32
    assert config_lib.load_config_file(str(path)).model.image_size == 64


def test_overrides_as_in_train_py(capsys):
    lines = []
    assert count_params.main([str(CONFIGS / "glide_base.py"), "--config.text.xf_layers=15"], out=lines.append) == 0
    assert count_params.main(["--config", str(CONFIGS / "glide_base.py")], out=lines.append) == 0  # as train.py
    assert lines[1] == "params: 385030726"
    per_block = 385030726 - int(lines[0].split()[-1])
    assert per_block == 12 * 512 * 512 + 13 * 512  # one text block: qkv, out, 4x MLP and two LayerNorms
    assert count_params.main([str(CONFIGS / "glide_base.py"), "--config.text.xf_layer=15"]) == 2
    assert "error: --config.text.xf_layer=15: config.text.xf_layer does not exist" in capsys.readouterr().err
    # validated like train.py's configs
    assert count_params.main([str(CONFIGS / "glide_base.py"), "--config.model.norm_groups=7"]) == 2
    assert "config.model.norm_groups" in capsys.readouterr().err
