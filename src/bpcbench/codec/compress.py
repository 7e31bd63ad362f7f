"""compress / decompress: bytes -> tokens -> lockstep probabilities -> range coder -> container.

Both directions run the same LockstepEvaluator loop; only the step differs (the encoder
looks its tokens up, the decoder decodes them). That shared loop is what makes decoding
bit-exact.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bpcbench import __version__, stats
from bpcbench.codec import entropy_model, range_coder
from bpcbench.codec.container import Container
from bpcbench.codec.session import Session, Settings, environment
from bpcbench.errors import CorruptInput, Mismatch
from bpcbench.llama.evaluation import Plan, plan_chunks

# Hashes in the header are cut to 64 bits: plenty to refuse a wrong model or catch a bad
# decode, and every byte of header is paid by every file.
HASH_HEX = 16


@dataclass
class Stats:
    input_bytes: int = 0
    container_bytes: int = 0
    coded_bytes: int = 0  # the range coder's payload alone
    n_tokens: int = 0
    n_chunks: int = 0
    fallback_bytes: int = 0
    ideal_bits: float = 0.0
    chunk_ideal_bits: list = field(default_factory=list)
    chunk_input_bytes: list = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # filled in by the caller, which measures with environment.PeakMemory

    @property
    def ideal_bits_per_byte(self) -> float:
        return stats.bits_per_byte(self.ideal_bits, self.input_bytes)

    @property
    def coded_bits_per_byte(self) -> float:
        return stats.bits_per_byte(self.coded_bytes * 8, self.input_bytes)

    @property
    def container_bits_per_byte(self) -> float:
        return stats.bits_per_byte(self.container_bytes * 8, self.input_bytes)

    @property
    def overhead_percent(self) -> float:
        ideal = self.ideal_bits / 8
        return (self.coded_bytes / ideal - 1) * 100 if ideal else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else float("nan")

    @property
    def kb_per_second(self) -> float:
        return self.input_bytes / 1000 / self.seconds if self.seconds else float("nan")

    @classmethod
    def measured(cls, data: bytes, tok, plan: Plan, chunk_bits: np.ndarray, vocab, t0: float, **sizes) -> "Stats":
        """Statistics of one pass over `data`, with per-chunk bits and bytes for bootstrap intervals."""
        offs = plan.offsets()
        return cls(
            input_bytes=len(data),
            n_tokens=len(tok.tokens),
            n_chunks=len(plan.chunk_lengths),
            fallback_bytes=tok.fallback_bytes,
            ideal_bits=float(chunk_bits.sum()),
            chunk_ideal_bits=chunk_bits.tolist(),
            chunk_input_bytes=[len(vocab.detokenize(tok.tokens[offs[i] : offs[i + 1]]))
                               for i in range(len(plan.chunk_lengths))],
            seconds=time.perf_counter() - t0,
            **sizes,
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("chunk_ideal_bits")
        d.pop("chunk_input_bytes")
        for k in ("ideal_bits_per_byte", "coded_bits_per_byte", "container_bits_per_byte",
                  "overhead_percent", "tokens_per_second", "kb_per_second"):
            d[k] = getattr(self, k)
        return d


def compress(data: bytes, session: Session, settings: Settings | None = None, progress=None) -> tuple[bytes, Stats]:
    settings = settings or Settings()
    t0 = time.perf_counter()
    tok, plan = session.prepare(data, settings)
    tokens, offs = tok.tokens, plan.offsets()
    enc = range_coder.Encoder()
    n_escapes = len(session.vocab.escape_bytes)
    factor = entropy_model.TwoLevel.for_alphabet(session.vocab.n_symbols)
    chunk_bits = np.zeros(len(plan.chunk_lengths))

    def step(chunk_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        symbols = tokens[offs[chunk_ids] + t]
        weights = entropy_model.weights(logits, n_escapes)
        chunk_bits[chunk_ids] += entropy_model.ideal_bits(weights, symbols)
        outer, inner = factor.tables(weights)
        blocks, within = factor.split(symbols)
        enc.encode(blocks, outer)
        enc.encode(within, inner(blocks))
        return session.vocab.model_input(symbols)

    if plan.chunk_lengths:
        session.evaluator(plan.width, plan.chunk_tokens, settings.threads).run(plan, step, _on_step(progress, plan))
    payload = enc.finish()
    header = {
        "model": {"name": session.info.name, "sha256": session.info.sha256[:HASH_HEX]},
        **environment(settings),
        "width": plan.width,
        "chunk_tokens": plan.chunk_tokens,
        "start_token": session.model.start_token,
        "n_tokens": plan.n_tokens,  # with chunk_tokens and max_width, re-derives every chunk length
        "max_width": settings.width,
        "fallback_bytes": tok.fallback_bytes,
        "vocab": session.vocab.fingerprint[:HASH_HEX],
        "block_symbols": factor.block,
        "original_bytes": len(data),
        "original_sha256": hashlib.sha256(data).hexdigest()[:HASH_HEX],
        "payload_words": int(len(payload)),
        "bpcbench": __version__,
    }
    blob = Container(header, payload).to_bytes()
    st = Stats.measured(data, tok, plan, chunk_bits, session.vocab, t0,
                        container_bytes=len(blob), coded_bytes=int(len(payload)) * 4)
    return blob, st


def _on_step(progress, plan: Plan):
    """Adapt a tqdm-like bar (reset(total=), update(n)) to the evaluator's per-step callback."""
    if progress is None:
        return None
    progress.reset(total=plan.n_tokens)
    return progress.update


def read_header(blob: bytes) -> Container:
    return Container.from_bytes(blob)


def check_compatible(header: dict, session_sha: str, settings: Settings, force: bool = False) -> list[str]:
    """Refuse (or, forced, warn about) a decode whose distributions could differ from the encoder's."""
    problems = []
    here = environment(settings)
    if not session_sha.startswith(header["model"]["sha256"]):
        raise Mismatch(
            f"model mismatch: file was compressed with {header['model']['name']} "
            f"(sha256 {header['model']['sha256'][:12]}…), this model has sha256 {session_sha[:12]}…"
        )
    for key, label in (("build", "llama.cpp build or CPU features"), ("threads", "thread count"),
                       ("n_gpu_layers", "GPU offload (n_gpu_layers)"), ("numpy", "numpy version"),
                       ("coder", "entropy coder")):
        if header.get(key) != here.get(key):
            problems.append(f"{label} differs: file has {header.get(key)!r}, here {here.get(key)!r}")
    if problems and not force:
        raise Mismatch(problems[0] + " (decoding could produce wrong bytes; --allow-mismatch tries anyway, the checksum still guards the output)")
    return problems


def decompress(blob: bytes, session: Session | None = None, model_spec: str | None = None,
               settings: Settings | None = None, force: bool = False, progress=None, *,
               threads: int | None = None, n_gpu_layers: int | None = None) -> tuple[bytes, Stats]:
    """Restore the bytes of a .bpcz file.

    Without `settings`, threads and offload are the ones the file records unless
    `threads` / `n_gpu_layers` override them; without `session`, the model is `model_spec`
    or the one the header names, loaded for this call.
    """
    t0 = time.perf_counter()
    container = Container.from_bytes(blob)
    h = container.header
    if settings is None:
        settings = Settings(threads=threads or h["threads"],
                            n_gpu_layers=h["n_gpu_layers"] if n_gpu_layers is None else n_gpu_layers)
    own = session is None
    if own:
        session = Session(model_spec or h["model"]["name"], n_gpu_layers=settings.n_gpu_layers)
    try:
        check_compatible(h, session.info.sha256, settings, force)
        plan = plan_chunks(h["n_tokens"], h["chunk_tokens"], h["max_width"])
        if plan.width != h["width"]:
            raise CorruptInput("compressed file's chunk plan is inconsistent (width)")
        if session.model.start_token != h["start_token"] or session.vocab.fingerprint[:HASH_HEX] != h["vocab"]:
            raise Mismatch("the model's vocabulary differs from the one recorded in the file")
        tokens = np.zeros(plan.n_tokens, dtype=np.int32)
        offs = plan.offsets()
        dec = range_coder.Decoder(container.payload)
        n_escapes = len(session.vocab.escape_bytes)
        factor = entropy_model.TwoLevel.for_alphabet(session.vocab.n_symbols)
        if h["block_symbols"] != factor.block:
            raise Mismatch("the file's probability tables are blocked differently from this model's")

        def step(chunk_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
            weights = entropy_model.weights(logits, n_escapes)
            outer, inner = factor.tables(weights)
            blocks = dec.decode(outer)
            symbols = factor.join(blocks, dec.decode(inner(blocks)))
            if symbols.max() >= factor.n_symbols:
                raise CorruptInput("decoded a symbol outside the alphabet: the file does not match this model/build")
            tokens[offs[chunk_ids] + t] = symbols
            return session.vocab.model_input(symbols)

        if plan.chunk_lengths:
            session.evaluator(plan.width, plan.chunk_tokens, settings.threads).run(plan, step, _on_step(progress, plan))
        data = session.vocab.detokenize(tokens)
    finally:
        if own:
            session.close()
    if len(data) != h["original_bytes"] or hashlib.sha256(data).hexdigest()[:HASH_HEX] != h["original_sha256"]:
        raise CorruptInput(
            "decoded data fails its checksum: the file is corrupt or was made under a different "
            "model/build; nothing was written"
        )
    st = Stats(input_bytes=len(data), container_bytes=len(blob), coded_bytes=len(container.payload) * 4,
               n_tokens=plan.n_tokens, n_chunks=len(plan.chunk_lengths), fallback_bytes=h["fallback_bytes"],
               seconds=time.perf_counter() - t0)
    return data, st
