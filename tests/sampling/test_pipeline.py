"""The sampling pipeline end to end on tiny checkpoints (glide_jax.sampling.pipeline)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax.config import ConfigError
from glide_jax.diffusion import create_gaussian_diffusion
from glide_jax.sampling import SamplingError, load_pipeline, stages
from glide_jax.sampling.errors import PromptTruncatedWarning
from tests.sampling.conftest import UP_SIZE, save_tiny, tiny_unet_config

SETTINGS = {"steps": "4", "batch_size": 8}
PROMPTS = ["a red circle", "a blue square", "two green stars"]


@pytest.fixture(scope="module")
def base_pipe(tiny_checkpoints):
    return load_pipeline(tiny_checkpoints["base"])


def test_same_seed_same_images_new_seed_new_images(base_pipe):
    first = base_pipe.generate(PROMPTS, dict(SETTINGS, seed=3))
    again = base_pipe.generate(PROMPTS, dict(SETTINGS, seed=3))
    other = base_pipe.generate(PROMPTS, dict(SETTINGS, seed=4))
    assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 10
    # Different prompts in one batch give different images.
    assert np.abs(first[0].astype(int) - first[1].astype(int)).mean() > 1


def test_later_batches_reuse_the_compiled_program(base_pipe):
    base_pipe.generate(PROMPTS, SETTINGS)
    traces = base_pipe.trace_counts["base"]
    # 10 prompts in batches of 4 -> 3 batches, each padded to 8 rows (8 devices).
    images = base_pipe.generate([f"prompt {i}" for i in range(10)],
                                dict(SETTINGS, batch_size=4, guidance_scale=5.0))
    assert images.shape == (10, 16, 16, 3)
    assert base_pipe.trace_counts["base"] == traces == 1


def test_eight_devices_equal_one(base_pipe, tiny_checkpoints):
    assert base_pipe.num_devices == 8
    single = load_pipeline(tiny_checkpoints["base"], devices=jax.local_devices()[:1])
    prompts = [f"shape {i}" for i in range(8)]
    on_eight = base_pipe.generate(prompts, dict(SETTINGS, seed=5))
    on_one = single.generate(prompts, dict(SETTINGS, seed=5))
    # Per-device batches of 1 vs 8 round float32 sums differently; DDPM amplifies
    # that at its noisiest step, so a few values land a level or two apart
    # (measured: 23 of 6144 one level apart under XLA's default optimisation,
    # 55 up to 3 levels under the suite's fast-compile flags). A sharding bug
    # (wrong noise, mixed-up rows) changes whole images: mean differences > 10.
    difference = np.abs(on_eight.astype(int) - on_one.astype(int))
    assert difference.max() <= 4
    assert (difference == 0).mean() > 0.98


def test_long_prompt_is_truncated_with_a_warning(base_pipe):
    with pytest.warns(PromptTruncatedWarning, match="keeps the first 8"):
        base_pipe.generate(["a very long prompt with many more words than eight tokens"], SETTINGS)


def test_guidance_scale_one_equals_the_conditional_model(base_pipe):
    model = base_pipe.base
    diffusion = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "ddim4")
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (2, 8)), jnp.int32)
    mask = jnp.ones((2, 8), bool)
    empty_tokens = jnp.full((2, 8), model.tokenizer.pad_token, jnp.int32)
    noise = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))

    @jax.jit
    def guided(scale):
        return stages.sample_base(model.module, model.variables, diffusion, "ddim",
                                  tokens=jnp.concatenate([tokens, empty_tokens]),
                                  mask=jnp.concatenate([mask, ~mask]), guidance_scale=scale,
                                  noise=jnp.concatenate([noise, noise]))[:2]

    conditional = jax.jit(lambda: stages.sample_base(model.module, model.variables, diffusion, "ddim",
                                                     tokens=tokens, mask=mask, guidance_scale=None,
                                                     noise=noise))()
    np.testing.assert_allclose(guided(1.0), conditional, atol=1e-4)
    assert float(jnp.abs(guided(4.0) - conditional).max()) > 1e-2  # guidance does act


def test_clip_guidance_end_to_end_in_bfloat16(tiny_checkpoints):
    # float32 CLIP guidance is checked against the reference by the parity group.
    pipe = load_pipeline(tiny_checkpoints["base"], clip=tiny_checkpoints["clip"], dtype="bfloat16")
    assert pipe.mode() == "clip" and pipe.base.module.dtype == jnp.bfloat16
    plain = pipe.generate(PROMPTS[:2], dict(SETTINGS, clip_guidance_scale=0.0))
    guided = pipe.generate(PROMPTS[:2], dict(SETTINGS, clip_guidance_scale=500.0))
    assert guided.shape == (2, 16, 16, 3)
    assert np.abs(plain.astype(int) - guided.astype(int)).max() > 0  # the gradient acts
    assert pipe.trace_counts["base"] == 1  # the scale is traced, not baked in


def test_checkpoint_errors_name_the_problem(tiny_checkpoints, tmp_path):
    with pytest.raises(SamplingError, match=r"--base checkpoint .*nowhere does not exist"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(SamplingError, match=r"holds a model of kind 'upsample' .* --base needs 'base' or 'inpaint'"):
        load_pipeline(tiny_checkpoints["upsample"])
    with pytest.raises(SamplingError, match=r"--upsample checkpoint .* is of kind 'upsample' but the base"):
        load_pipeline(tiny_checkpoints["inpaint"], upsample=tiny_checkpoints["upsample"])
    with pytest.raises(SamplingError, match=r"--clip .* holds no config.json: --clip takes an exported model \(a "
                                            r"folder with config.json and params.npz\) or a training workdir"):
        load_pipeline(tiny_checkpoints["base"], clip=tmp_path)
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "config.json").write_text("{")
    with pytest.raises(SamplingError, match="cannot load --clip checkpoint .*bad_json: .* is not valid JSON"):
        load_pipeline(tiny_checkpoints["base"], clip=tmp_path / "bad_json")
    edited = shutil.copytree(tiny_checkpoints["base"], tmp_path / "edited")
    stored = json.loads((edited / "config.json").read_text())
    stored["model"]["model_channels"] = 64  # the params were saved for 32
    (edited / "config.json").write_text(json.dumps(stored))
    with pytest.raises(SamplingError, match=r"edited: params do not match its config.json: input_blocks_0_0/bias "
                                            r"has shape \(32,\), expected \(64,\); .* \(and \d+ more\)"):
        load_pipeline(edited)
    other = tiny_unet_config("upsample", UP_SIZE)
    other.data.low_res_size = 8
    with pytest.raises(SamplingError, match=r"trained to upsample 8 px images \(data.low_res_size, or a quarter "
                                            r"of its output where its config.json has none\) but the base model "
                                            r"makes 16 px"):
        load_pipeline(tiny_checkpoints["base"], upsample=save_tiny(tmp_path / "up8", other))
    (tmp_path / "fresh_run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(SamplingError, match=r"fresh_run is a training workdir that has saved no checkpoint yet"):
        load_pipeline(tmp_path / "fresh_run")
    truncated = shutil.copytree(tiny_checkpoints["base"], tmp_path / "truncated")
    (truncated / "params.npz").write_bytes((truncated / "params.npz").read_bytes()[:1000])
    with pytest.raises(SamplingError, match=r"cannot load --base checkpoint .*truncated: .*params.npz"):
        load_pipeline(truncated)


def test_inpainting_needs_its_inputs(tiny_checkpoints, base_pipe):
    pipe = load_pipeline(tiny_checkpoints["inpaint"])
    assert (pipe.settings().guidance_scale, pipe.settings().upsample_sampler) == (5.0, "ddpm")
    assert (base_pipe.settings().guidance_scale, base_pipe.settings().upsample_sampler) == (3.0, "ddim")
    assert pipe.settings({"guidance_scale": 2.0}).guidance_scale == 2.0
    with pytest.raises(SamplingError, match="is an inpainting model: give a source image and mask"):
        pipe.generate(["x"], SETTINGS)
    with pytest.raises(SamplingError, match="needs an 'inpaint' base model"):
        base_pipe.generate(["x"], SETTINGS, inpaint=object())
    with pytest.raises(SamplingError, match="unknown sample setting 'stepz'"):
        base_pipe.generate(["x"], {"stepz": "4"})
    # Inputs built by hand: checked before anything is traced.
    from glide_jax.sampling.images import InpaintInputs

    good_image, good_mask = np.zeros((16, 16, 3), np.float32), np.ones((16, 16, 1), np.float32)
    for inputs, message in [
        (InpaintInputs(np.full((16, 16, 3), 200, np.uint8), good_mask), r"inpaint.image is uint8 \(16, 16, 3\)"),
        (InpaintInputs(good_image, np.ones((16, 16), np.float32)), r"inpaint.mask is float32 \(16, 16\); expected "
                                                                    r"float \(16, 16, 1\)"),
        (InpaintInputs(good_image + 3.0, good_mask), r"inpaint.image holds values in \[3, 3\]; expected \[-1, 1\]"),
    ]:
        with pytest.raises(SamplingError, match=message):
            pipe.generate(["x"], SETTINGS, inpaint=inputs)


def test_a_training_workdir_resolves_to_its_export(tiny_checkpoints, tmp_path):
    shutil.copytree(tiny_checkpoints["base"], tmp_path / "workdir" / "export")
    pipe = load_pipeline(tmp_path / "workdir")
    assert pipe.base.path == tmp_path / "workdir" / "export" and pipe.image_size == 16


def test_checkpoint_config_from_another_version_loads(tiny_checkpoints, tmp_path):
    import json
    ckpt = shutil.copytree(tiny_checkpoints["base"], tmp_path / "old")
    config = json.loads((ckpt / "config.json").read_text())
    del config["model"]["remat"]  # a field added later: gets its default
    config["data"] = {"an_old_field": 1}  # training sections are not the sampler's business
    (ckpt / "config.json").write_text(json.dumps(config))
    pipe = load_pipeline(ckpt)
    assert pipe.base.config.model.remat is False and "data" not in pipe.base.config
    config["model"]["kind"] = "nonsense"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(SamplingError, match=r"cannot load --base checkpoint .*config\.model\.kind = 'nonsense'"):
        load_pipeline(ckpt)



def test_api_arguments_are_checked(base_pipe):
    with pytest.raises(TypeError, match="prompt 1 is 2"):
        base_pipe.generate(["a", 2], {"steps": "2"})
    # Integer respacings and numpy integers are taken as the CLI would take them.
    settings = base_pipe.settings({"steps": 4, "seed": np.int64(3), "batch_size": np.int32(2)})
    assert (settings.steps, settings.seed, settings.batch_size) == ("4", 3, 2)
    with pytest.raises(SamplingError, match="sample setting 'guidance_scale' = 'high': must be of type float"):
        base_pipe.settings({"guidance_scale": "high"})
    with pytest.raises(ConfigError, match=r"config\.sample\.seed = 4294967296: must be an integer in \[0, 2\*\*32\)"):
        base_pipe.settings({"seed": 2**32})


def test_float16_on_a_cpu_is_refused_in_one_line(tiny_checkpoints):
    with pytest.raises(SamplingError, match="computes in float16, which XLA:CPU cannot run"):
        load_pipeline(tiny_checkpoints["base"], dtype="float16")


@pytest.mark.parametrize("guide, per_step", [("cfg", True), ("clip", True), ("cfg", False)])
def test_the_progress_bar_counts_every_step_of_every_stage_and_batch(tiny_checkpoints, capsys, monkeypatch,
                                                                    guide, per_step):
    # per_step False: as on an accelerator, where the bar moves once per finished stage.
    monkeypatch.setattr("glide_jax.sampling.pipeline._ticks_each_step", lambda mesh: per_step)
    clip = tiny_checkpoints["clip"] if guide == "clip" else None
    pipe = load_pipeline(tiny_checkpoints["base"], upsample=tiny_checkpoints["upsample"], clip=clip)
    settings = dict(SETTINGS, batch_size=2, upsample_steps="ddim3", seed=1)  # 3 prompts: 2 batches
    quiet = pipe.generate(PROMPTS, settings)
    capsys.readouterr()
    shown = pipe.generate(PROMPTS, settings, progress=True)
    bar = capsys.readouterr().err
    np.testing.assert_array_equal(shown, quiet)  # the bar's callbacks change no sample
    assert "14/14" in bar and "step" in bar  # 2 batches x (4 base + 3 upsampler steps)
    assert pipe._on_step is None  # the finished run's bar is unhooked
    assert {key[-1] for key in pipe._programs} == {False, per_step}  # the quiet run has no callbacks
