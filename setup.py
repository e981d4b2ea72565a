"""glide-jax: GLIDE text-to-image diffusion in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="glide-jax",
    version="0.1.0",
    description="GLIDE (Nichol et al. 2021) in JAX/Flax: training, sampling, sharding.",
    python_requires=">=3.10",
    packages=find_packages(include=["glide_jax", "glide_jax.*"]),
    package_data={"glide_jax.text": ["vocab/*.gz"]},
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10.0",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.9.0",
        "ml-collections>=0.1.1",
        "absl-py>=1.4",
        "numpy>=1.26",
        "sentencepiece>=0.2.0",
        "regex>=2023.0",
        "ftfy>=6.1",
        "tqdm>=4.65",
        "pillow>=10.0",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5"],
        "data": ["tensorflow>=2.16", "tensorflow-datasets>=4.9.4", "importlib_resources>=6.0"],
        "convert": ["torch>=2.1"],
    },
)
