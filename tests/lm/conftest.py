"""Session fixtures for the LM tests: SmolLM2 (ours and HF's) loaded once, MMLU prompts."""
import json
import os

import pytest

PROMPTS_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "gdm_jax", "assets", "prompts",
                            "mmlu.jsonl")


@pytest.fixture(scope="session")
def mmlu_texts():
    with open(PROMPTS_FILE) as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="session")
def smollm2_file():
    from gdm_jax.lm.weights import smollm2_path
    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_file):
    """(cfg, params) of SmolLM2-135M-Instruct dequantised to fp32 by our loader."""
    from gdm_jax.lm.weights import load_gguf
    return load_gguf(smollm2_file)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_file):
    from gdm_jax.lm.tokenizer import load_gguf_tokenizer
    return load_gguf_tokenizer(smollm2_file)


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_file):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.dirname(smollm2_file),
                                         gguf_file=os.path.basename(smollm2_file))


@pytest.fixture(scope="session")
def hf_model(smollm2_file):
    """The oracle: transformers' own GGUF loader and Llama implementation, fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(smollm2_file),
                                                 gguf_file=os.path.basename(smollm2_file),
                                                 dtype=torch.float32)
    return model.eval()
