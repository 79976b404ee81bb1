"""Hyperparameters of a Llama-family decoder."""
from __future__ import annotations

import dataclasses

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder (read from a GGUF or HF config)."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    rope_theta: float
    norm_eps: float
    max_seq_len: int
    tie_embeddings: bool
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads",
                     "hidden_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(
                f"LlamaConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"LlamaConfig.n_heads ({self.n_heads}) must be a multiple of "
                             f"n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig head_dim ({self.head_dim}) must be even for RoPE")
        if not self.rope_theta > 0:
            raise ValueError(f"LlamaConfig.rope_theta must be > 0, got {self.rope_theta!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"LlamaConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"LlamaConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    def replace(self, **changes) -> "LlamaConfig":
        """A copy with some fields changed (e.g. dtype="bfloat16")."""
        return dataclasses.replace(self, **changes)


def tiny_config(**overrides) -> LlamaConfig:
    """A few-thousand-parameter config for tests (GQA, untied head)."""
    fields = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48,
                  rope_theta=10000.0, norm_eps=1e-5, max_seq_len=64, tie_embeddings=False)
    fields.update(overrides)
    return LlamaConfig(**fields)
