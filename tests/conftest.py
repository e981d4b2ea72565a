"""Test setup: 8 host CPU devices, fast XLA compiles, float32 matmuls, fixture paths.

XLA reads XLA_FLAGS once, when jax initialises its backends, so the flags are
set here, before any test module imports jax. Subprocesses that the tests
start inherit them through the environment.

The suite is bound by XLA:CPU compile time (tiny models, a few steps each),
so it compiles with LLVM's cheap pipeline (`FAST_COMPILE_FLAGS`): the slowest
train tests compile 1.6-3x faster. Results are checked against tolerances or
against runs made under the same flags, never against bits from an optimised
build. `GLIDE_TEST_FULL_OPT=1` runs the suite with XLA's default optimisation
instead (what users run), for when a compiler-level problem is suspected.
"""

import os
import pathlib

DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def _test_xla_flags(current: str) -> str:
    flags = current.split()
    wanted = [DEVICES_FLAG]
    if os.environ.get("GLIDE_TEST_FULL_OPT", "") in ("", "0"):
        wanted += FAST_COMPILE_FLAGS
    return " ".join(flags + [f for f in wanted if f not in flags])


os.environ["XLA_FLAGS"] = _test_xla_flags(os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the XLA_FLAGS set-up)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """The copied glide-text2im reference fixtures (see tests/fixtures/README.md)."""
    return FIXTURES
