"""The tiny random GGUF loads, tokenizes, evaluates, quantizes, and is reproducible."""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np
import pytest
from tiny_gguf import BOS_ID, EOS_ID, VOCAB_SIZE, write_tiny_gguf

from bpcbench.llama import binding

llama_cpp = pytest.importorskip("llama_cpp")

GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4


# --------------------------------------------------------------------------
# llama.cpp plumbing


@pytest.fixture(scope="module")
def llama_logs():
    """Capture llama.cpp's log lines instead of printing them; restore afterwards."""
    lines: list[tuple[int, str]] = []

    @llama_cpp.llama_log_callback
    def _cb(level, text, _user_data):
        lines.append((int(level), text.decode("utf-8", "replace")))

    llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    try:
        yield lines
    finally:
        # back to bpcbench's silencer, the state every later test of the session assumes (installed
        # once per process, so restoring llama_cpp's own logger let loader chatter reach their stderr)
        binding._init_backend()
        llama_cpp.llama_log_set(binding._init_backend.callback, ctypes.c_void_p(0))
        del _cb


class Model:
    def __init__(self, path: Path):
        self.model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
        assert self.model, f"llama.cpp could not load {path}"
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.ctx = None

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def tokenize(self, data: bytes) -> list[int]:
        n = 4 * len(data) + 8
        buf = (llama_cpp.llama_token * n)()
        r = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n, False, False)
        assert r >= 0, r
        return list(buf[:r])

    def piece(self, tok: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(128)
        r = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, special)
        assert r >= 0, r
        return buf.raw[:r]

    def detok(self, toks: list[int]) -> bytes:
        return b"".join(self.piece(t) for t in toks)

    def logits(self, toks: list[int]) -> np.ndarray:
        """Logits after the last token of `toks`, from a fresh KV cache."""
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = 512
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_seq_max = 1
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        assert self.ctx
        arr = (llama_cpp.llama_token * len(toks))(*toks)
        rc = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(arr, len(toks)))
        assert rc == 0, rc
        n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx), shape=(n_vocab,)).copy()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, llama_logs) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="module")
def model(tiny_path):
    m = Model(tiny_path)
    yield m
    m.close()


def tokenize_bytes(m: Model, data: bytes) -> list[int]:
    """llama_tokenize on valid UTF-8 runs; each invalid byte b becomes token id b.

    llama.cpp's BPE tokenizer replaces invalid UTF-8 with U+FFFD, so it cannot
    round-trip arbitrary bytes by itself; the tiny vocabulary's ids 0..255 are
    the single bytes, which makes this fallback exact.
    """
    out: list[int] = []
    run: list[str] = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            if run:
                out += m.tokenize("".join(run).encode("utf-8"))
                run = []
            out.append(ord(ch) - 0xDC00)
        else:
            run.append(ch)
    if run:
        out += m.tokenize("".join(run).encode("utf-8"))
    return out


INVALID_UTF8 = [
    b"Hello world \xff\x00 \r\n",
    b"\xc3\x28\xa0\xa1\xe2\x82\xf0\x9f\x98",
    b"\xed\xa0\x80 surrogate, \xc0\x80 overlong, truncated \xe2\x82",
    bytes(range(256)),
    bytes(range(255, -1, -1)),
]


# --------------------------------------------------------------------------
# tests


def test_loads_with_expected_vocab_and_no_warnings(tiny_path, llama_logs):
    llama_logs.clear()
    m = Model(tiny_path)
    try:
        assert llama_cpp.llama_vocab_n_tokens(m.vocab) == VOCAB_SIZE == 512
        assert llama_cpp.llama_vocab_bos(m.vocab) == BOS_ID == 256
        assert llama_cpp.llama_vocab_eos(m.vocab) == EOS_ID == 257
        assert llama_cpp.llama_vocab_is_control(m.vocab, BOS_ID)
        assert llama_cpp.llama_vocab_is_control(m.vocab, EOS_ID)
        assert llama_cpp.llama_vocab_is_eog(m.vocab, EOS_ID)
        assert not llama_cpp.llama_vocab_get_add_bos(m.vocab)
        assert llama_cpp.llama_model_n_embd(m.model) == 256
        assert llama_cpp.llama_model_n_layer(m.model) == 2
        assert llama_cpp.llama_model_n_head(m.model) == 4
        assert llama_cpp.llama_model_n_ctx_train(m.model) == 4096
    finally:
        m.close()
    bad = [t for lvl, t in llama_logs if lvl in (GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR)]
    assert bad == []


def test_byte_tokens_are_single_bytes(model):
    for b in range(256):
        assert model.piece(b) == bytes([b])
    assert model.piece(BOS_ID) == b""
    assert model.piece(BOS_ID, special=True) == b"<s>"
    assert model.piece(EOS_ID, special=True) == b"</s>"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 10,
        bytes(range(128)),
        b"Hello world \x00 \r\n",
        b"The quick brown fox jumps over the lazy dog. " * 3,
        "Émile's naïve café — 日本語, 😀 \u2581 \ufffd.".encode(),
        b"<s> and </s> are plain text here",
        b"   \t\t\n\n  trailing spaces   ",
    ],
    ids=["empty", "nuls", "ascii", "hello", "english", "unicode", "specials", "spaces"],
)
def test_valid_utf8_round_trips_through_llama_tokenize(model, data):
    toks = model.tokenize(data)
    assert model.detok(toks) == data
    assert BOS_ID not in toks and EOS_ID not in toks


def test_merges_are_used(model):
    toks = model.tokenize(b" the the and the")
    assert len(toks) == 4  # " the", " the", " and", " the": merged tokens
    assert all(t >= 258 for t in toks)


@pytest.mark.parametrize("data", INVALID_UTF8)
def test_invalid_utf8_round_trips_with_byte_fallback(model, data):
    toks = tokenize_bytes(model, data)
    assert model.detok(toks) == data
    assert all(0 <= t < VOCAB_SIZE for t in toks)


def test_llama_tokenize_replaces_invalid_utf8(model):
    # Documents llama.cpp 0.3.36 behaviour that callers must work around:
    # the BPE pre-tokenizer decodes to code points and maps each invalid byte
    # to U+FFFD, so the bytes do not come back.
    data = b"a\xffb"
    assert model.detok(model.tokenize(data)) == "a\ufffdb".encode()


def test_decode_gives_varied_context_dependent_logits(model):
    toks = model.tokenize(b"The quick brown fox jumps over the lazy dog.")
    lg = model.logits(toks)
    assert lg.shape == (VOCAB_SIZE,)
    assert np.isfinite(lg).all()
    assert lg.std() > 0.5  # not nearly uniform
    assert len(np.unique(lg)) > VOCAB_SIZE // 2
    other = model.logits(model.tokenize(b"Numbers: 1 2 3 4 dog."))
    assert toks[-1] == model.tokenize(b"Numbers: 1 2 3 4 dog.")[-1]
    assert not np.allclose(lg, other, atol=1e-3)  # same last token, other context


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, llama_logs):
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)
    assert a.stat().st_size == c.stat().st_size
    # rewriting over an existing file is atomic and leaves no temp files behind
    write_tiny_gguf(a, seed=8)
    assert sha(a) == sha(c)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]


def test_f16_is_smaller_and_loads(tmp_path, llama_logs, model):
    p32 = write_tiny_gguf(tmp_path / "f32.gguf")
    p16 = write_tiny_gguf(tmp_path / "f16.gguf", file_type="F16")
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    m = Model(p16)
    try:
        toks = m.tokenize(b"Hello world")
        np.testing.assert_allclose(m.logits(toks), model.logits(toks), atol=0.05)
    finally:
        m.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_tiny_gguf(tmp_path / "x.gguf", file_type="Q4_0")
    with pytest.raises(ValueError):
        write_tiny_gguf(tmp_path / "x.gguf", n_embd=250, n_head=4)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M", "Q2_K"])
def test_quantized_model_is_smaller_and_loads(tiny_path, tmp_path, llama_logs, qtype):
    dst = tmp_path / f"tiny-{qtype}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    rc = llama_cpp.llama_model_quantize(str(tiny_path).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0
    assert dst.stat().st_size < tiny_path.stat().st_size / 3
    m = Model(dst)
    try:
        assert llama_cpp.llama_vocab_n_tokens(m.vocab) == VOCAB_SIZE
        data = b"Hello world \x00 \r\n"
        toks = m.tokenize(data)
        assert m.detok(toks) == data
        lg = m.logits(toks)
        assert np.isfinite(lg).all()
        assert lg.std() > 0.5
    finally:
        m.close()
