"""detokenize(tokenize(x)) == x for every byte string, on the tiny model and on a synthetic vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcbench.codec.tokenization import Vocabulary

AWKWARD = [
    b"",
    b"a",
    b"\x00",
    b"\x00" * 300,
    b"\xff\xfe\xfd",
    b"caf\xc3",  # truncated UTF-8 sequence at the end
    b"\xed\xa0\x80",  # an encoded surrogate, invalid in UTF-8
    b"line one\r\nline two\r\n",
    b"   leading spaces and trailing   ",
    "naïve café — ½ 日本語 🙂".encode(),
    bytes(range(256)),
    b"ab" * 2000,
    b"<s></s><|endoftext|>",  # special-token text must be coded as plain text
]


@pytest.fixture(scope="module")
def vocab(tiny_session):
    return tiny_session.vocab


@pytest.mark.parametrize("data", AWKWARD, ids=range(len(AWKWARD)))
def test_awkward_inputs_round_trip(vocab, data):
    tok = vocab.tokenize(data)
    assert tok.tokens.dtype == np.int32
    assert vocab.detokenize(tok.tokens) == data


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_round_trip(vocab, data):
    assert vocab.detokenize(vocab.tokenize(data).tokens) == data


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_valid_text_needs_no_fallback(vocab, text):
    data = text.encode("utf-8", "ignore")  # drop lone surrogates: not UTF-8
    tok = vocab.tokenize(data)
    assert vocab.detokenize(tok.tokens) == data
    assert tok.fallback_bytes == 0


def test_invalid_bytes_are_counted_as_fallback(vocab):
    tok = vocab.tokenize(b"ok \xff\xfe ok")
    assert tok.fallback_bytes == 2


def test_merges_are_used_for_text(vocab):
    data = b"the cat and the dog in the thing"
    assert len(vocab.tokenize(data).tokens) < len(data)


def _synthetic_vocab():
    """A vocabulary whose tokenizer cannot spell 0xff and has no single-byte token for it."""
    pieces = [bytes([b]) for b in range(255)] + [b"ab"]

    def tokenize(data: bytes) -> np.ndarray:
        assert b"\xff" not in data
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    return Vocabulary(pieces, tokenize, placeholder_token=0)


def test_escape_symbols_cover_bytes_without_tokens():
    v = _synthetic_vocab()
    assert v.escape_bytes == [0xFF]
    assert v.n_symbols == 257
    data = b"x\xffy\xff"
    tok = v.tokenize(data)
    assert v.detokenize(tok.tokens) == data
    assert tok.tokens.tolist() == [ord("x"), 256, ord("y"), 256]
    assert v.model_input(tok.tokens).tolist() == [ord("x"), 0, ord("y"), 0]
