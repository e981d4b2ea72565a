"""Converter core: safe loading, strict key mapping, the U-Net name table."""

import os

import numpy as np
import pytest

from glide_jax.convert import core
from glide_jax.convert.unet import convert_unet, unet_rule
from glide_jax.tools import parity_models


class _RunsCode:
    """Pickles into a call of os.system: what a hostile checkpoint would contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    with pytest.raises(core.ConversionError, match="refusing to load .*evil.pt") as info:
        core.load_state(path)
    assert not marker.exists()
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert "weights_only" not in str(info.value)  # torch's advice to load it unsafely is dropped


def test_unreadable_pt_files_are_one_clear_error(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(1000))
    (tmp_path / "text.pt").write_text("hello world\n")  # torch's unpickler raises KeyError on it
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("random.pt", "text.pt"):
        with pytest.raises(core.ConversionError, match=f"cannot read .*{name} as a PyTorch checkpoint") as info:
            core.load_state(tmp_path / name)
        assert "weights_only" not in str(info.value) and "will likely succeed" not in str(info.value)
    with pytest.raises(core.ConversionError, match="empty.pt: the file is empty"):
        core.load_state(tmp_path / "empty.pt")


def test_unreadable_npz_files_are_one_clear_error(fixtures_dir, tmp_path):
    raw = (fixtures_dir / "base_state.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(core.ConversionError, match="truncated.npz is not a readable .npz"):
        core.load_state(tmp_path / "truncated.npz")
    with pytest.raises(core.ConversionError, match="empty.npz: the file is empty"):
        core.load_state(tmp_path / "empty.npz")
    with pytest.raises(core.ConversionError, match="random.npz is not a readable .npz") as info:
        core.load_state(tmp_path / "random.npz")
    assert "allow_pickle" not in str(info.value)


def test_npz_with_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(core.ConversionError, match="objects.npz"):
        core.load_state(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(core.ConversionError, match="absent.pt does not exist"):
        core.load_state(tmp_path / "absent.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(core.ConversionError, match="folder.pt is a directory"):
        core.load_state(tmp_path / "folder.pt")
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(core.ConversionError, match="unsupported checkpoint type '.h5'"):
        core.load_state(tmp_path / "weights.h5")


def test_pt_equals_npz(fixtures_dir, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "BASE.PT").write_bytes((fixtures_dir / "base.pt").read_bytes())  # the suffix in any case
    pt = core.load_state(tmp_path / "BASE.PT")
    npz = core.load_state(fixtures_dir / "base_state.npz")
    assert list(pt) == list(npz)
    for key in npz:
        assert pt[key].dtype == np.float32
        np.testing.assert_array_equal(pt[key], npz[key], err_msg=key)


@pytest.fixture(scope="module")
def base(fixtures_dir):
    return parity_models.case_config(fixtures_dir, "base"), core.load_state(fixtures_dir / "base_state.npz")


def test_every_key_consumed_every_param_filled(base):
    config, state = base
    params = convert_unet(state, config)
    leaves = []
    stack = [params]
    while stack:
        node = stack.pop()
        for value in node.values():
            (stack.append(value) if isinstance(value, dict) else leaves.append(value))
    assert len(leaves) == len(state)
    assert sum(leaf.size for leaf in leaves) == sum(v.size for v in state.values())
    assert all(leaf.dtype == np.float32 for leaf in leaves)


def test_layouts(base):
    config, state = base
    params = convert_unet(state, config)
    np.testing.assert_array_equal(params["input_blocks_0_0"]["kernel"],
                                  state["input_blocks.0.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["input_blocks_3_1"]["qkv"]["kernel"],
                                  state["input_blocks.3.1.qkv.weight"][:, :, 0].T)
    np.testing.assert_array_equal(params["time_embed_1"]["kernel"], state["time_embed.2.weight"].T)
    np.testing.assert_array_equal(params["text_encoder"]["token_embedding"]["embedding"],
                                  state["token_embedding.weight"])
    np.testing.assert_array_equal(params["out_norm"]["scale"], state["out.0.weight"])


def test_errors_name_missing_unexpected_and_mismatched(base):
    config, state = base
    broken = dict(state)
    del broken["middle_block.1.qkv.bias"]
    broken["middle_block.1.extra.weight"] = np.zeros(3, np.float32)
    broken["out.2.weight"] = np.zeros((6, 32, 1, 1), np.float32)
    with pytest.raises(core.ConversionError) as info:
        convert_unet(broken, config)
    message = str(info.value)
    assert "missing (1" in message and "middle_block_1/qkv/bias" in message
    assert "unexpected (1" in message and "middle_block.1.extra.weight" in message
    assert "shape mismatches (1" in message and "out.2.weight (6, 32, 1, 1)" in message
    assert "out_conv/kernel" in message


def test_wrong_options_are_a_shape_error(base):
    config, state = base
    config = config.copy_and_resolve_references()
    config.text.n_vocab = 1000
    with pytest.raises(core.ConversionError, match="token_embedding.weight"):
        convert_unet(state, config)


@pytest.mark.parametrize("key, path", [
    ("transformer.resblocks.1.attn.c_proj.weight", ("text_encoder", "resblocks_1", "attn_c_proj", "kernel")),
    ("transformer.resblocks.0.mlp.c_proj.bias", ("text_encoder", "resblocks_0", "mlp_c_proj", "bias")),
    ("final_ln.weight", ("text_encoder", "final_ln", "scale")),
    ("output_blocks.5.2.in_layers.0.weight", ("output_blocks_5_2", "in_norm", "scale")),
    ("output_blocks.2.1.conv.weight", ("output_blocks_2_1", "conv", "kernel")),
    ("input_blocks.3.0.op.bias", ("input_blocks_3_0", "op", "bias")),
    ("input_blocks.4.0.skip_connection.weight", ("input_blocks_4_0", "skip", "kernel")),
    ("middle_block.1.encoder_kv.weight", ("middle_block_1", "encoder_kv", "kernel")),
])
def test_rule_table(key, path):
    assert unet_rule(key).path == path


@pytest.mark.parametrize("key", ["label_emb.weight", "input_blocks.1.0.in_layers.1.weight",
                                 "transformer.resblocks.0.attn.c_v.weight", "unemb.weight"])
def test_rule_rejects_unknown_keys(key):
    assert unet_rule(key) is None
