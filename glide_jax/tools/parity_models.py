"""Parity group `models`: the U-Nets and text transformer against glide-text2im.

For every U-Net case in the fixture directory (a `<case>_options.json`,
`<case>_state.npz` and `<case>_io.npz`, e.g. base, upsample, inpaint,
upsample_inpaint), builds the config from the options with
`config_from_glide_options`, converts the weights with the converter users run
on released checkpoints, runs the model in float32 on the recorded inputs and
compares the output and the intermediates `unet_input`, `timestep_embedding`,
`time_emb`, `xf_proj`, `xf_out` and `middle_out`. Also checks that `base.pt`
read through torch (weights_only) equals `base_state.npz`. Fixture arrays are
NCHW / NCL; the model gets NHWC / NLC.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax import config as config_lib
from glide_jax.convert import core as convert_core
from glide_jax.convert.unet import convert_unet
from glide_jax.models import factory
from glide_jax.tools.parity import Check, compare, failed, to_nhwc

# Float32 reference; we measure ~2e-6 relative L2 with "highest" precision.
REL_L2 = 1e-5
ATOL = 1e-4
CASE_FILES = ("{}_options.json", "{}_state.npz", "{}_io.npz")


def find_cases(fixture_dir: pathlib.Path) -> list[str]:
    """U-Net cases with all three files present, in sorted order."""
    cases = []
    for options in sorted(fixture_dir.glob("*_options.json")):
        case = options.name[: -len("_options.json")]
        if all((fixture_dir / pattern.format(case)).is_file() for pattern in CASE_FILES):
            cases.append(case)
    return cases


def case_config(fixture_dir: pathlib.Path, case: str):
    """The config of a fixture case (options JSON + its tokenizer vocabulary size)."""
    raw = json.loads((fixture_dir / f"{case}_options.json").read_text())
    config = config_lib.config_from_glide_options(raw["model_and_diffusion_options"])
    config.text.n_vocab = int(raw["tokenizer_n_vocab"])
    return config_lib.validate(config)


def model_kwargs(io) -> dict:
    """The conditioning keyword arguments recorded in an `<case>_io.npz`."""
    kwargs = {"tokens": jnp.asarray(io["tokens"], jnp.int32), "mask": jnp.asarray(io["mask"])}
    if "low_res" in io:
        kwargs["low_res"] = to_nhwc(io["low_res"])
    if "inpaint_image" in io:
        kwargs["inpaint_image"] = to_nhwc(io["inpaint_image"])
        kwargs["inpaint_mask"] = to_nhwc(io["inpaint_mask"])
    return kwargs


def run_case(fixture_dir: pathlib.Path, case: str) -> tuple[dict, dict]:
    """Converts and runs one case; returns (ours, expected), both NHWC / NLC."""
    config = case_config(fixture_dir, case)
    params = convert_unet(convert_core.load_state(fixture_dir / f"{case}_state.npz"), config)
    model = factory.create_model(config)
    io = np.load(fixture_dir / f"{case}_io.npz")
    kwargs = model_kwargs(io)
    output, state = model.apply({"params": params}, to_nhwc(io["x"]), jnp.asarray(io["timesteps"], jnp.int32),
                                **kwargs, mutable=["intermediates"])
    text = model.apply({"params": params}, kwargs["tokens"], kwargs["mask"], method="encode_text")
    inter = {name: values[0] for name, values in state["intermediates"].items()}
    ours = {"output": output, "xf_proj": text["xf_proj"], "xf_out": text["xf_out"], **inter}
    expected = {
        "output": np.transpose(io["output"], (0, 2, 3, 1)),
        "unet_input": np.transpose(io["unet_input"], (0, 2, 3, 1)),
        "timestep_embedding": io["timestep_embedding"],
        "time_emb": io["time_emb"],
        "xf_proj": io["xf_proj"],
        "xf_out": np.transpose(io["xf_out"], (0, 2, 1)),
        "middle_out": np.transpose(io["middle_out"], (0, 2, 3, 1)),
    }
    return ours, expected


def _pt_check(fixture_dir: pathlib.Path) -> Iterator[Check]:
    name = "models: base.pt == base_state.npz"
    try:
        pt = convert_core.load_state(fixture_dir / "base.pt")
        npz = convert_core.load_state(fixture_dir / "base_state.npz")
    except Exception as exc:  # torch missing or unreadable: a failed row, not a crash
        yield failed(name, f"{type(exc).__name__}: {exc}")
        return
    if list(pt) != list(npz):
        yield failed(name, f"key lists differ: only in .pt {sorted(set(pt) - set(npz))}, "
                           f"only in npz {sorted(set(npz) - set(pt))}")
        return
    yield compare(name, np.concatenate([pt[k].ravel() for k in pt]),
                  np.concatenate([npz[k].ravel() for k in npz]), 0.0, "exact")


def _case_checks(fixture_dir: pathlib.Path, case: str) -> Iterator[Check]:
    try:
        ours, expected = run_case(fixture_dir, case)
    except Exception as exc:  # a case that cannot even run is one failed row
        yield failed(f"models: {case} (could not run)", f"{type(exc).__name__}: {exc}")
        return
    for name, value in expected.items():
        yield compare(f"models: {case} {name}", ours[name], value, REL_L2, "rel_l2", atol=ATOL)


def checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    """Yields one row per compared quantity of every U-Net case."""
    fixture_dir = pathlib.Path(fixture_dir)
    cases = find_cases(fixture_dir)
    if not cases:
        yield failed("models: (no U-Net cases)", f"no <case>_options/_state/_io files in {fixture_dir}")
        return
    # The fixtures are float32; accelerators would otherwise use TF32/bf16 passes.
    # Rows are collected inside the context so it is not left set while suspended.
    with jax.default_matmul_precision("float32"):
        rows = [row for case in cases for row in _case_checks(fixture_dir, case)]
    yield from rows
    if (fixture_dir / "base.pt").is_file():
        yield from _pt_check(fixture_dir)
