"""Llama-family language model: config, KV cache, forward pass, GGUF/HF loaders, tokenizer, generation."""
