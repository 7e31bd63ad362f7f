"""Lossless tokenization: detokenize(tokenize(x)) == x for every byte string.

llama.cpp's tokenizers are built for text: invalid UTF-8 and some normalisations do not
come back byte for byte. We tokenize with llama.cpp, check the round trip, and where a
span does not survive we narrow it down (valid-UTF-8 runs -> lines -> code points) and
spell what is left with the vocabulary's single-byte tokens (byte-level BPE has all 256;
SentencePiece with byte fallback has <0x00>..<0xFF>).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Maximal runs of well-formed UTF-8; everything between them is an invalid byte.
_UTF8_RUN = re.compile(
    rb"(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})+"
)
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
_CODEPOINT = re.compile(rb"[\x00-\x7f]|[\xc0-\xff][\x80-\xbf]*", re.S)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@dataclass(frozen=True)
class Tokenized:
    tokens: np.ndarray  # int32
    fallback_bytes: int  # bytes spelled with single-byte tokens because llama.cpp's tokens did not round-trip


class Vocabulary:
    """The coder's alphabet: the model's tokens, then one escape symbol per byte value that
    no token spells on its own (SmolLM2 has no token for 0xff, for instance).

    Escape symbols are coded with a small fixed probability (entropy_model.with_escapes)
    and fed to the model as the placeholder token, so any byte string stays codable.
    """

    def __init__(self, pieces: list[bytes], tokenize, placeholder_token: int = 0):
        self.n_vocab = len(pieces)
        self._tokenize = tokenize
        self.placeholder_token = placeholder_token
        self.byte_token = np.full(256, -1, dtype=np.int64)
        for tok, piece in enumerate(pieces):
            if len(piece) == 1 and self.byte_token[piece[0]] < 0:
                self.byte_token[piece[0]] = tok
        self.escape_bytes = [int(b) for b in np.nonzero(self.byte_token < 0)[0]]
        self.byte_token[self.escape_bytes] = self.n_vocab + np.arange(len(self.escape_bytes))
        self.pieces = list(pieces) + [bytes([b]) for b in self.escape_bytes]

    @classmethod
    def from_model(cls, model) -> "Vocabulary":
        return cls(model.pieces, model.tokenize, model.start_token)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over every symbol's bytes: equal fingerprints spell every symbol the same
        (computed once per vocabulary, since every compress and decompress call asks for it)."""
        h = hashlib.sha256()
        for piece in self.pieces:
            h.update(len(piece).to_bytes(2, "little") + piece)
        return h.hexdigest()

    @property
    def n_symbols(self) -> int:
        return len(self.pieces)

    def model_input(self, symbols: np.ndarray) -> np.ndarray:
        """What the model is fed for each coded symbol: escapes become the placeholder token."""
        return np.where(symbols < self.n_vocab, symbols, self.placeholder_token).astype(np.int32)

    def detokenize(self, tokens) -> bytes:
        pieces = self.pieces
        return b"".join([pieces[t] for t in np.asarray(tokens).tolist()])

    def tokenize(self, data: bytes) -> Tokenized:
        parts: list[np.ndarray] = []
        fallback = self._cover(data, parts, level=0)
        tokens = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, dtype=np.int32)
        return Tokenized(tokens, fallback)

    def _cover(self, data: bytes, out: list[np.ndarray], level: int) -> int:
        """Take llama.cpp's tokens for `data` if they round-trip, else split one level finer.

        Levels: 0 the whole input, 1 a valid UTF-8 run, 2 a line, 3 a code point; a code
        point that still fails is spelled in byte tokens. Returns the bytes spelled so.
        """
        if not data:
            return 0
        # llama.cpp's BPE pre-tokenizer aborts the process on invalid UTF-8: never show it any
        if level > 0 or _is_utf8(data):
            toks = self._tokenize(data)
            if self.detokenize(toks) == data:
                out.append(toks)
                return 0
        if level == 3:
            return self._bytes(data, out)
        fallback = 0
        if level == 0:
            pos = 0
            for m in _UTF8_RUN.finditer(data):
                fallback += self._bytes(data[pos : m.start()], out)
                fallback += self._cover(m.group(), out, 1)
                pos = m.end()
            return fallback + self._bytes(data[pos:], out)
        pattern = _LINE if level == 1 else _CODEPOINT
        for m in pattern.finditer(data):
            fallback += self._cover(m.group(), out, level + 1)
        return fallback

    def _bytes(self, data: bytes, out: list[np.ndarray]) -> int:
        if data:
            out.append(self.byte_token[np.frombuffer(data, dtype=np.uint8)].astype(np.int32))
        return len(data)
