"""Test setup: 8 host CPU devices, float32 matmuls, shared fixture paths.

XLA reads XLA_FLAGS once, when jax initialises its backends, so the flag is
set here, before any test module imports jax.
"""

import os
import pathlib

_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the XLA_FLAGS set-up)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """The copied glide-text2im reference fixtures (see tests/fixtures/README.md)."""
    return FIXTURES
