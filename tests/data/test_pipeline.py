"""The input pipeline over glide_shapes: batches, hosts, determinism, resume, dropout."""

import json

import jax
import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax import data
from glide_jax.data import pipeline as pipeline_lib
from glide_jax.text import get_tokenizer

TRAIN = 48  # tests/data/conftest.py builds 48 train examples


def _take(pipe, n):
    return [next(pipe) for _ in range(n)]


def _equal(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def _captions(batches, tokenizer):
    return [tokenizer.decode(t[m].tolist()) for b in batches for t, m in zip(b["tokens"], b["mask"])]


def test_base_batch_contract_and_tokens_decode_to_captions(shapes_config):
    pipe = data.create_input_pipeline(shapes_config, split="train", seed=0)
    batch = next(pipe)
    assert set(batch) == {"image", "tokens", "mask"}
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() < 0.0 < batch["image"].max() <= 1.0
    assert batch["tokens"].shape == (8, 48) and batch["tokens"].dtype == np.int32
    assert batch["mask"].shape == (8, 48) and batch["mask"].dtype == bool
    tokenizer = get_tokenizer(shapes_config.text)
    assert np.all(batch["tokens"][~batch["mask"]] == tokenizer.pad_token)
    assert set(_captions([batch], tokenizer)) <= set(data.iter_captions(shapes_config, "train"))


@pytest.mark.parametrize("kind", ["upsample", "inpaint", "upsample_inpaint", "clip"])
def test_kinds_add_their_inputs(tiny_config, kind):
    config = tiny_config()
    config.model.kind = kind
    config.clip.image_size = 16
    batch = next(data.create_input_pipeline(config, split="validation", seed=0))
    size = 16 if kind == "clip" else 32
    assert batch["image"].shape == (8, size, size, 3)
    if "upsample" in kind:
        assert batch["low_res"].shape == (8, 8, 8, 3) and batch["low_res"].dtype == np.float32
        # low_res is the anti-aliased image: 4x4 block means of the 32 px image.
        blocks = batch["image"].reshape(8, 8, 4, 8, 4, 3).mean((2, 4))
        assert np.abs(blocks - batch["low_res"]).max() < 1e-4
    if "inpaint" in kind:
        mask = batch["inpaint_mask"]
        assert mask.shape == (8, 32, 32, 1) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0} and 0 < mask.mean() < 1
    if kind == "clip":
        assert batch["tokens"].shape == (8, config.clip.max_text_len)
        clip_tok = get_tokenizer({"tokenizer": "clip"})  # the noised CLIP's own vocabulary
        # CLIP's decode re-spaces punctuation, so compare without spaces.
        captions = {c.replace(" ", "") for c in data.iter_captions(config, "validation")}
        for tokens, mask in zip(batch["tokens"], batch["mask"]):
            text = clip_tok.decode(tokens[mask].tolist())
            assert text.startswith("<|startoftext|>") and text.endswith("<|endoftext|>")
            assert text[len("<|startoftext|>"):-len("<|endoftext|>")].replace(" ", "") in captions


def test_simulated_hosts_get_disjoint_equal_shares(shapes_config):
    tokenizer = get_tokenizer(shapes_config.text)
    all_captions = list(data.iter_captions(shapes_config, "train"))
    assert len(set(all_captions)) == TRAIN  # so captions identify examples
    shares = []
    for host in range(2):
        pipe = data.create_input_pipeline(shapes_config, split="train", seed=0, process_index=host,
                                          process_count=2, num_epochs=1)
        assert pipe.host_batch_size == 4 and pipe.examples_per_epoch == TRAIN // 2
        shares.append(_captions(list(pipe), tokenizer))
    assert len(shares[0]) == len(shares[1]) == TRAIN // 2
    assert not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(all_captions)


def test_same_seed_same_batches_and_other_seed_differs(shapes_config):
    first = _take(data.create_input_pipeline(shapes_config, seed=5), 3)
    again = _take(data.create_input_pipeline(shapes_config, seed=5), 3)
    other = _take(data.create_input_pipeline(shapes_config, seed=6), 3)
    assert _equal(first, again)
    assert not _equal(first, other)


def test_epochs_reshuffle_and_cover_the_split(shapes_config):
    tokenizer = get_tokenizer(shapes_config.text)
    pipe = data.create_input_pipeline(shapes_config, seed=0, num_epochs=2)
    epochs = np.array(_captions(list(pipe), tokenizer)).reshape(2, TRAIN)
    assert set(epochs[0]) == set(epochs[1]) == set(data.iter_captions(shapes_config, "train"))
    assert list(epochs[0]) != list(epochs[1])


def test_resume_gives_the_batches_of_an_unbroken_run(tiny_config):
    # Inpainting + dropout + random crop: every seeded random decision is covered.
    config = tiny_config(caption_dropout=0.5, random_crop=True, random_flip=True)
    config.model.kind = "inpaint"
    unbroken = _take(data.create_input_pipeline(config, seed=3), 10)  # 6 batches per epoch
    pipe = data.create_input_pipeline(config, seed=3)
    _take(pipe, 4)
    saved = json.loads(json.dumps(pipe.state()))
    assert saved["batches"] == 4
    resumed = data.create_input_pipeline(config, seed=3)
    resumed.restore(saved)
    assert _equal(_take(resumed, 6), unbroken[4:])
    with pytest.raises(ValueError, match="seed=3"):
        data.create_input_pipeline(config, seed=4).restore(saved)
    # The shuffle buffer sets the order too; states from before it was recorded still restore.
    other_buffer = tiny_config(caption_dropout=0.5, random_crop=True, random_flip=True, shuffle_buffer=16)
    other_buffer.model.kind = "inpaint"
    with pytest.raises(ValueError, match="shuffle_buffer=64 but this one has 16"):
        data.create_input_pipeline(other_buffer, seed=3).restore(saved)
    # Not strict: the same count of examples in the new pipeline's order (4 batches of 8 = 2 of 16).
    halved = tiny_config(caption_dropout=0.5, random_crop=True, random_flip=True, batch_size=16)
    halved.model.kind = "inpaint"
    relaxed = data.create_input_pipeline(halved, seed=3)
    relaxed.restore(saved, strict=False)
    assert relaxed.position == 2
    older = {k: v for k, v in saved.items() if k != "shuffle_buffer"}
    resumed = data.create_input_pipeline(config, seed=3)
    resumed.restore(older)
    assert _equal(_take(resumed, 1), unbroken[4:5])


def test_caption_dropout_hits_its_rate(tiny_config):
    config = tiny_config(caption_dropout=0.3)
    pipe = data.create_input_pipeline(config, seed=0, batch_size=48)
    batches = _take(pipe, 10)  # 480 captions (10 epochs), none of them empty
    dropped = ~np.concatenate([b["mask"] for b in batches]).any(-1)
    # Binomial(480, 0.3) has std 10; allow 4 std.
    assert abs(dropped.mean() - 0.3) < 40 / 480
    tokens = np.concatenate([b["tokens"] for b in batches])
    assert np.all(tokens[dropped] == get_tokenizer(config.text).pad_token)


def test_default_dropout_is_glides_and_zero_for_clip(tiny_config):
    config = tiny_config(caption_dropout=None)
    assert pipeline_lib.example_spec(config).caption_dropout == 0.2
    config.model.kind = "clip"
    assert pipeline_lib.example_spec(config).caption_dropout == 0.0


def test_global_batch_is_sharded_over_the_mesh(shapes_config):
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "fsdp"))
    local = next(data.create_input_pipeline(shapes_config, seed=1))
    batch = next(data.create_input_pipeline(shapes_config, seed=1, mesh=mesh))
    for key, value in batch.items():
        assert isinstance(value, jax.Array) and value.shape == local[key].shape
        assert value.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
        assert len(value.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(value), local[key])
    with pytest.raises(ValueError, match="not divisible by the 8 shards"):
        data.create_input_pipeline(shapes_config, seed=1, mesh=mesh, batch_size=12)


def test_each_process_must_hold_its_own_rows():
    # Two simulated processes of four devices each: with the batch over 8
    # shards each holds its 4 rows; with only "tensor" over the devices the
    # batch is replicated, and each process's devices would hold all 8 rows
    # of which it read only 4 (jax would build a smaller, inconsistent batch).
    devices = np.array(jax.devices())
    axes = ("data", "fsdp", "tensor")
    split = pipeline_lib.batch_sharding(jax.sharding.Mesh(devices.reshape(4, 2, 1), axes), ("data", "fsdp"))
    pipeline_lib.check_host_rows(split, 8, 4, devices[:4])
    tensor = pipeline_lib.batch_sharding(jax.sharding.Mesh(devices.reshape(1, 1, 8), axes), ("data", "fsdp"))
    with pytest.raises(config_lib.ConfigError, match=r"config\.mesh: the batch of 8 is split into 1 shards .* hold "
                                                     r"8 rows, but each process reads its own 4"):
        pipeline_lib.check_host_rows(tensor, 8, 4, devices[:4])


def test_long_captions_are_cut_to_text_ctx_with_one_warning(caplog):
    import logging

    from glide_jax.data import preprocess

    captions = preprocess.CaptionTokenizer(get_tokenizer({"tokenizer": "gpt2"}), text_ctx=4)
    with caplog.at_level(logging.WARNING):
        tokens, mask = captions([b"one two three four five six", b"a b c d e f g", b"short"], np.zeros(3, bool))
    assert mask.sum(1).tolist() == [4, 4, 1] and captions.truncated == 2
    warnings = [r.getMessage() for r in caplog.records if "text_ctx = 4" in r.getMessage()]
    assert len(warnings) == 1 and "the first has 6: 'one two three four five six'" in warnings[0]
