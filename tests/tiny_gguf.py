"""A tiny, valid, llama-architecture GGUF with random weights, for tests.

``write_tiny_gguf(path)`` writes a ~1-3 MB model that llama.cpp loads, tokenizes
with and evaluates, and that ``llama_model_quantize`` can turn into Q8_0, Q4_K_M
or Q2_K (all row lengths are multiples of 256). Nothing is downloaded: the
weights come from ``numpy.random.Generator(PCG64(seed))`` and the vocabulary is
a byte-level BPE learnt, deterministically, from a short built-in English text.

Vocabulary layout (``n_merges=254`` by default, 512 tokens in all):

* ids 0..255: the single bytes, id == byte value, each spelled with GPT-2's
  byte-to-unicode mapping (so every byte string is representable);
* id 256: ``<s>`` (BOS, CONTROL); id 257: ``</s>`` (EOS, CONTROL);
* ids 258..: one token per merge, in merge (rank) order.

The same arguments always give the same bytes on disk.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from bpcbench.atomic import atomic_path

__all__ = [
    "write_tiny_gguf",
    "tiny_vocab",
    "bytes_to_unicode",
    "BOS_ID",
    "EOS_ID",
    "N_MERGES",
    "VOCAB_SIZE",
]

BOS_ID = 256
EOS_ID = 257
N_MERGES = 254
VOCAB_SIZE = 256 + 2 + N_MERGES  # 512

# Pre-tokenizer name written to tokenizer.ggml.pre. "default" is accepted by
# llama.cpp without a warning and selects LLAMA_VOCAB_PRE_TYPE_DEFAULT.
TOKENIZER_PRE = "default"

# Training text for the merges: plain English, written for this file.
_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. This is the first line of the
text that the tiny model uses to learn its merges, and the merges are only
there so that the tokenizer does something more interesting than one token
per byte. In the beginning there was the byte, and the byte was with the
tokenizer. Then there were pairs of bytes that were seen together again and
again: th, he, in, an, er, on, the, and, ing, tion, that, with, for, this.
When the model reads the text it sees the same words over and over, and it
is the counting of those words that decides which pairs come first. There is
nothing random in the merges: the same text gives the same merges, in the
same order, every time the function is called, on every machine.
We want to compress text with a language model and an arithmetic coder, and
we want to compare the number of bits per character with what other
compressors reach on the same input. For that the tests need a model that is
small, fast and always the same, so that they can run in a second or two.
It is not a good model; it has never been trained and its weights are noise.
But it is a real model: it has an embedding, attention, a feed forward
network, normalization and an output layer, and llama.cpp can load it,
evaluate it and quantize it, which is all that the tests ask of it.
Numbers appear too: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14159 42.
Punctuation as well: commas, full stops; colons: quotes "like this" and
'this', (parentheses), [brackets], {braces}, dashes - and -- and so on...
"""

# GPT-2's pre-tokenizer, approximated with ``re`` (ASCII classes are enough
# for the built-in training text); it only decides which merges are learnt.
_PRETOKENIZE = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _learn_merges(n_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE on the built-in text; ties go to the smallest pair."""
    b2u = bytes_to_unicode()
    word_counts = Counter(_PRETOKENIZE.findall(_TRAINING_TEXT))
    words: list[tuple[list[str], int]] = [
        ([b2u[b] for b in w.encode("utf-8")], c) for w, c in sorted(word_counts.items())
    ]
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for syms, c in words:
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += c
        if not pairs:
            raise ValueError(f"training text supports only {len(merges)} merges, not {n_merges}")
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == best[0] and syms[i + 1] == best[1]:
                    syms[i : i + 2] = [joined]
                i += 1
    return merges


def tiny_vocab(n_merges: int = N_MERGES) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of the tiny byte-level BPE vocabulary."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + ["<s>", "</s>"]
    types = [int(gguf.TokenType.NORMAL)] * 256 + [int(gguf.TokenType.CONTROL)] * 2
    merges = _learn_merges(n_merges)
    seen = set(tokens)
    for a, b in merges:
        t = a + b
        if t in seen:  # cannot happen with this trainer, but keep ids unique
            raise AssertionError(f"duplicate merged token {t!r}")
        seen.add(t)
        tokens.append(t)
        types.append(int(gguf.TokenType.NORMAL))
    return tokens, types, [f"{a} {b}" for a, b in merges]


_FILE_TYPES = {
    "F32": (gguf.LlamaFileType.ALL_F32, np.float32),
    "F16": (gguf.LlamaFileType.MOSTLY_F16, np.float16),
}


def write_tiny_gguf(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    n_embd: int = 256,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 512,
    n_ctx_train: int = 4096,
    file_type: str = "F32",
) -> Path:
    """Write a random-weight llama GGUF to `path` (atomically) and return the path.

    `file_type` is "F32" (everything float32) or "F16" (2-D weight matrices
    float16, norm vectors float32). For k-quants (Q4_K_M, Q2_K) keep `n_embd`
    and `n_ff` multiples of 256; `n_embd` must be divisible by `n_head`.
    """
    if file_type not in _FILE_TYPES:
        raise ValueError(f"file_type must be one of {sorted(_FILE_TYPES)}, not {file_type!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
    head_dim = n_embd // n_head
    if head_dim % 2:
        raise ValueError(f"head dimension {head_dim} must be even for RoPE")
    ftype, wdtype = _FILE_TYPES[file_type]

    tokens, types, merges = tiny_vocab()
    n_vocab = len(tokens)
    n_head_kv = n_head

    arch = gguf.MODEL_ARCH.LLAMA
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    rng = np.random.Generator(np.random.PCG64(seed))

    def mat(rows: int, cols: int, scale: float = 0.02) -> np.ndarray:
        # numpy (rows, cols) is ggml ne=[cols, rows]: `cols` is the input dim.
        w = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)
        return np.ascontiguousarray(w.astype(wdtype))

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch_name)
        w.add_name("bpcbench-tiny")
        w.add_file_type(int(ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(n_ctx_train)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(n_vocab)

        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(TOKENIZER_PRE)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(BOS_ID)
        w.add_eos_token_id(EOS_ID)
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)

        # N(0, 0.02) everywhere, except a larger output matrix so that logits
        # spread over a few nats instead of being nearly uniform.
        w.add_tensor(names[T.TOKEN_EMBD] + ".weight", mat(n_vocab, n_embd))
        for i in range(n_layer):
            blk = lambda t, i=i: names[t].format(bid=i) + ".weight"  # noqa: E731
            w.add_tensor(blk(T.ATTN_NORM), norm(n_embd))
            w.add_tensor(blk(T.ATTN_Q), mat(n_embd, n_embd))
            w.add_tensor(blk(T.ATTN_K), mat(n_head_kv * head_dim, n_embd))
            w.add_tensor(blk(T.ATTN_V), mat(n_head_kv * head_dim, n_embd))
            w.add_tensor(blk(T.ATTN_OUT), mat(n_embd, n_embd))
            w.add_tensor(blk(T.FFN_NORM), norm(n_embd))
            w.add_tensor(blk(T.FFN_GATE), mat(n_ff, n_embd))
            w.add_tensor(blk(T.FFN_UP), mat(n_ff, n_embd))
            w.add_tensor(blk(T.FFN_DOWN), mat(n_embd, n_ff))
        w.add_tensor(names[T.OUTPUT_NORM] + ".weight", norm(n_embd))
        w.add_tensor(names[T.OUTPUT] + ".weight", mat(n_vocab, n_embd, 0.1))

        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
