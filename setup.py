"""gdm_jax: generative decision models in JAX/Flax."""
from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax>=0.12,<0.13",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "brax==0.14.2",
    "absl-py",
    "numpy",
    "tensorboardX",
    "tqdm",
    "matplotlib",
    "gguf==0.19.0",
    "tokenizers",
    "safetensors",
    "binpacking==2.0.1",
    "jinja2",
]
# HF transformers (torch CPU) is the parity oracle for the LM and a baseline in the
# prefill benchmark. Install torch first as `pip install torch==2.13.0` (CPU build).
LLM_ORACLE = ["torch==2.13.0", "transformers>=5,<6", "accelerate"]
TEST = ["pytest", "hypothesis"]

setup(
    name="gdm_jax",
    version="0.1.0",
    description="Generative decision models (Dreamer+ODT, Decision Stacks, Prepacking, ICL, GPO) in JAX/Flax",
    packages=find_packages(include=["gdm_jax", "gdm_jax.*"]),
    package_data={"gdm_jax": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=CORE,
    # Compile for TPU pods on a CPU machine (benchmarks/tpu_aot.py); brings libtpu.
    extras_require={"llm": LLM_ORACLE, "test": TEST + LLM_ORACLE, "tpu-aot": ["jax[tpu]==0.10.2"]},
)
