"""glide-jax: GLIDE text-to-image diffusion in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="glide-jax",
    version="0.1.0",
    description="GLIDE (Nichol et al. 2021) in JAX/Flax: training, sampling, sharding.",
    python_requires=">=3.11",
    packages=find_packages(include=["glide_jax", "glide_jax.*"]),
    package_data={"glide_jax.text": ["vocab/*.gz"]},
    # Lower bounds: the versions in .ci/minimum-versions.txt, which
    # `make test-minimum` runs the whole suite on.
    install_requires=[
        "jax>=0.10.0",
        "flax>=0.12.2",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.17",
        "ml-collections>=0.1.1",
        "numpy>=2.0",
        "sentencepiece>=0.2.0",
        "regex>=2023.3.22",
        "ftfy>=6.1.1",
        "tqdm>=4.65",
        "pillow>=10.0",
        "tensorboardX>=2.6.2.2",
    ],
    extras_require={
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5"],
        "data": ["tensorflow>=2.19", "tensorflow-datasets>=4.9.4", "importlib_resources>=6.0"],
        "convert": ["torch>=2.13"],
    },
)
