"""Byte-level BPE tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries the vocabulary, merges, token types and special ids but no
`tokenizer.json`. For `tokenizer.ggml.model == "gpt2"` (SmolLM2, Llama-3 style files)
we rebuild a `tokenizers` BPE with GPT-2 byte-level pre-tokenisation and decoding,
register CONTROL tokens (type 3) as special and USER_DEFINED ones (type 4) as added
tokens so they are never split, which is what transformers' GGUF loader produces.
`pre` values that need another split regex (llama3, qwen2, ...) are rejected rather
than tokenised wrongly.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

CONTROL, USER_DEFINED = 3, 4
# Pre-tokeniser names whose split regex is GPT-2's own (the ByteLevel default).
GPT2_REGEX_PRE = ("default", "gpt2", "smollm", "starcoder", "refact", "olmo", "codeshell")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            # Unprintable bytes go to code points above 255, in byte order.
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _metadata(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


@dataclasses.dataclass
class GGUFTokenizer:
    """Encode/decode text and render the chat template of a GGUF model."""

    backend: "object"  # tokenizers.Tokenizer
    bos_id: Optional[int]
    eos_id: Optional[int]
    pad_id: Optional[int]
    add_bos: bool
    chat_template: Optional[str]

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: Optional[bool] = None) -> list[int]:
        """Token ids of `text` (BOS prepended if the file asks for it, or if add_bos=True)."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos):
            if self.bos_id is None:
                raise ValueError("add_bos requested but the GGUF file has no tokenizer.ggml.bos_token_id")
            ids = [self.bos_id] + ids
        return ids

    def encode_batch(self, texts: Sequence[str], add_bos: Optional[bool] = None) -> list[list[int]]:
        """`encode` applied to each text."""
        return [self.encode(t, add_bos) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The chat template rendered with jinja2 (HF's settings: trim/lstrip blocks)."""
        if not self.chat_template:
            raise ValueError("the GGUF file has no tokenizer.chat_template")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
        import jinja2
        import jinja2.sandbox

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        specials = {"bos_token": self._token(self.bos_id), "eos_token": self._token(self.eos_id)}
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **specials)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered chat (special tokens in the template are kept whole)."""
        return self.encode(self.render_chat(messages, add_generation_prompt), add_bos=False)

    def _token(self, token_id):
        return "" if token_id is None else self.backend.id_to_token(token_id)


def load_gguf_tokenizer(path: str) -> GGUFTokenizer:
    """Build the tokenizer described by a GGUF file's metadata."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(path)
    kind = _metadata(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer.ggml.model={kind!r} is not supported (only byte-level 'gpt2')")
    pre = _metadata(reader, "tokenizer.ggml.pre", "default")
    if pre not in GPT2_REGEX_PRE:
        raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} needs a split regex this tokenizer lacks; "
                         f"supported: {GPT2_REGEX_PRE}")
    tokens = list(_metadata(reader, "tokenizer.ggml.tokens"))
    types = list(_metadata(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ")) for m in _metadata(reader, "tokenizer.ggml.merges", [])]
    alphabet = byte_to_unicode()
    spelled = set(alphabet.values())
    # Tokens outside the byte alphabet are stored as raw text; respell them as bytes.
    vocab = {t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # A control token spelled outside the byte alphabet is a converter mislabel, not a real token.
    special = [AddedToken(t, normalized=False, special=True)
               for t, ty in zip(tokens, types) if ty == CONTROL and set(t) <= spelled]
    backend.add_special_tokens(special)
    user = [AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types) if ty == USER_DEFINED and t in vocab]
    if user:
        backend.add_tokens(user)

    def token_id(key):
        value = _metadata(reader, key)
        return None if value is None else int(value)

    return GGUFTokenizer(backend=backend, bos_id=token_id("tokenizer.ggml.bos_token_id"),
                         eos_id=token_id("tokenizer.ggml.eos_token_id"),
                         pad_id=token_id("tokenizer.ggml.padding_token_id"),
                         add_bos=bool(_metadata(reader, "tokenizer.ggml.add_bos_token", False)),
                         chat_template=_metadata(reader, "tokenizer.chat_template"))
