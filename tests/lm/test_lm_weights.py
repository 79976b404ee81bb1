"""Weight loaders: HF-directory round trip vs transformers, tiny GGUF files, clear errors."""
import json
import os

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.lm.config import tiny_config
from gdm_jax.lm.model import forward, init_params
from gdm_jax.lm.weights import load_gguf, load_hf_dir, permute_rope_rows, save_hf_dir, smollm2_path

CFG = tiny_config()
fwd = jax.jit(forward, static_argnames=("cfg", "attn_backend"))
TOKENS = jnp.asarray([[1, 5, 9, 33, 2, 60, 7]])


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0), scale=0.3)


def _logits(params, cfg):
    t = TOKENS
    return np.asarray(fwd(params, cfg, t, jnp.arange(t.shape[1])[None], jnp.ones_like(t))[0])


def write_tiny_gguf(path, cfg, params, arch="llama", override=None):
    """A llama.cpp-style GGUF of params: F32 tensors, torch [out, in] layout, Q/K rows permuted."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(cfg.n_layers)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.head_dim)
    names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
             "wo": "attn_output", "mlp_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up",
             "w_down": "ffn_down"}
    tensors = {"token_embd.weight": np.asarray(params["embed"]),
               "output_norm.weight": np.asarray(params["final_norm"])}
    if "lm_head" in params:
        tensors["output.weight"] = np.asarray(params["lm_head"]).T
    for i in range(cfg.n_layers):
        for key, name in names.items():
            w = np.asarray(params["layers"][key][i])
            w = w if w.ndim == 1 else w.T
            if key == "wq":
                w = permute_rope_rows(w, cfg.n_heads)
            elif key == "wk":
                w = permute_rope_rows(w, cfg.n_kv_heads)
            tensors[f"blk.{i}.{name}.weight"] = w
    tensors.update(override or {})
    for name, w in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tie", [False, True])
def test_hf_dir_round_trip_matches_transformers(tmp_path, params, tie):
    import torch
    from transformers import LlamaForCausalLM

    cfg = CFG.replace(tie_embeddings=tie)
    p = dict(params)
    if tie:
        p.pop("lm_head")
    save_hf_dir(cfg, p, str(tmp_path))
    cfg2, p2 = load_hf_dir(str(tmp_path))
    assert cfg2 == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, p2, p)
    ours = _logits(p2, cfg2)
    model = LlamaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor(np.asarray(TOKENS), dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_hf_dir_loads_bfloat16_checkpoints(tmp_path, params):
    import torch
    from safetensors.torch import load_file, save_file

    save_hf_dir(CFG, params, str(tmp_path))
    st = os.path.join(str(tmp_path), "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(st).items()}, st)
    _, loaded = load_hf_dir(str(tmp_path))
    rounded = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, rounded)


def test_hf_dir_errors_name_the_problem(tmp_path, params):
    from safetensors.numpy import load_file, save_file

    save_hf_dir(CFG, params, str(tmp_path))
    st = os.path.join(str(tmp_path), "model.safetensors")
    tensors = load_file(st)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((CFG.hidden_dim + 1, CFG.dim), np.float32)
    save_file(tensors, st)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*shape"):
        load_hf_dir(str(tmp_path))
    cfg_path = os.path.join(str(tmp_path), "config.json")
    with open(cfg_path) as f:
        config_json = json.load(f)
    config_json["model_type"] = "gpt2"
    with open(cfg_path, "w") as f:
        json.dump(config_json, f)
    with pytest.raises(ValueError, match="model_type.*gpt2"):
        load_hf_dir(str(tmp_path))


def test_gguf_loader_undoes_rope_permutation(tmp_path, params):
    path = str(tmp_path / "tiny.gguf")
    write_tiny_gguf(path, CFG, params)
    cfg, loaded = load_gguf(path)
    assert cfg == CFG
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=0), loaded, params)
    np.testing.assert_allclose(_logits(loaded, cfg), _logits(params, CFG), atol=1e-6)


def test_gguf_errors_name_the_problem(tmp_path, params):
    other = str(tmp_path / "other.gguf")
    write_tiny_gguf(other, CFG, params, arch="gpt2")
    with pytest.raises(ValueError, match="architecture.*gpt2"):
        load_gguf(other)
    bad_shape = str(tmp_path / "bad_shape.gguf")
    write_tiny_gguf(bad_shape, CFG, params,
                    override={"blk.1.ffn_up.weight": np.zeros((CFG.hidden_dim, CFG.dim + 2), np.float32)})
    with pytest.raises(ValueError, match=r"blk\.1\.ffn_up\.weight.*shape"):
        load_gguf(bad_shape)
    bad_type = str(tmp_path / "bad_type.gguf")
    write_tiny_gguf(bad_type, CFG, params,
                    override={"blk.0.attn_v.weight": np.zeros((CFG.n_kv_heads * CFG.head_dim, CFG.dim),
                                                             np.int32)})
    with pytest.raises(ValueError, match=r"blk\.0\.attn_v\.weight.*unsupported type I32"):
        load_gguf(bad_type)
    with pytest.raises(FileNotFoundError):
        load_gguf(str(tmp_path / "missing.gguf"))


def test_smollm2_config_from_gguf_metadata(smollm2):
    cfg, params = smollm2
    assert os.path.basename(smollm2_path()) == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (cfg.vocab_size, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim) == (
        49152, 576, 30, 9, 3, 1536)
    assert cfg.rope_theta == 100000.0 and cfg.tie_embeddings and "lm_head" not in params
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert 134e6 < n_params < 136e6
