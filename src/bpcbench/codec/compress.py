"""compress / decompress: bytes -> tokens -> lockstep probabilities -> range coder -> container.

Both directions run the same evaluator loop (lanes, or the old disjoint chunks); only the
step differs (the encoder looks its tokens up, the decoder decodes them). That shared loop
is what makes decoding bit-exact. Format version 2 files are coded in lanes; version 1
files (disjoint chunks) still decode.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from bpcbench import __version__, stats
from bpcbench.codec import entropy_model, range_coder
from bpcbench.codec.container import Container
from bpcbench.codec.session import Session, Settings, environment
from bpcbench.codec.tokenization import Tokenized, Vocabulary
from bpcbench.errors import BpcError, CorruptInput, Mismatch
from bpcbench.llama.binding import default_threads
from bpcbench.llama.evaluation import Plan, plan_chunks
from bpcbench.llama.lanes import LanePlan, plan_lanes
from bpcbench.models import KNOWN_MODELS

# Hashes in the header are cut to 64 bits: plenty to refuse a wrong model or catch a bad
# decode, and every byte of header is paid by every file.
HASH_HEX = 16
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30  # a decode writes at most this much unless told otherwise
MAX_CHUNKS = 1 << 20  # version 1 files: more chunks than this is a forged plan


@dataclass
class Stats:
    input_bytes: int = 0
    container_bytes: int = 0
    coded_bytes: int = 0  # the range coder's payload alone
    n_tokens: int = 0
    n_chunks: int = 0  # independently scored pieces: lanes, chunks, or the ideal stream's bootstrap blocks
    fallback_bytes: int = 0
    ideal_bits: float = 0.0
    policy: str = ""
    context: int = 0  # the policy's window
    lanes: int = 0  # cold starts: each lane (or chunk) starts from BOS with no history
    context_mean: float = float("nan")  # tokens of history (BOS included) per scored token
    context_min: int = 0
    context_max: int = 0
    scored_bytes: int | None = None  # bytes of the tokens scored, where a policy scores only some (llama-perplexity)
    perplexity: float = float("nan")  # exp(mean −ln p), plain vocabulary softmax (window policies only)
    chunk_ideal_bits: list = field(default_factory=list)
    chunk_input_bytes: list = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # filled in by the caller, which measures with environment.PeakMemory

    @property
    def ideal_bits_per_byte(self) -> float:
        return stats.bits_per_byte(self.ideal_bits, self.input_bytes if self.scored_bytes is None else self.scored_bytes)

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
    def measured(cls, data: bytes, tok: Tokenized, lengths, piece_bits: np.ndarray, contexts: np.ndarray,
                 vocab: Vocabulary, t0: float, **fields) -> Stats:
        """Statistics of one pass over `data`: per-piece bits and bytes (for bootstrap intervals), and
        the history each scored token had (`contexts`, one entry per token)."""
        offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(
            input_bytes=len(data), n_tokens=len(tok.tokens), n_chunks=len(lengths), fallback_bytes=tok.fallback_bytes,
            ideal_bits=float(piece_bits.sum()), chunk_ideal_bits=piece_bits.tolist(),
            chunk_input_bytes=[len(vocab.detokenize(tok.tokens[offs[i] : offs[i + 1]])) for i in range(len(lengths))],
            context_mean=float(contexts.mean()) if len(contexts) else float("nan"),
            context_min=int(contexts.min()) if len(contexts) else 0,
            context_max=int(contexts.max()) if len(contexts) else 0,
            seconds=time.perf_counter() - t0, **fields)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("chunk_ideal_bits")
        d.pop("chunk_input_bytes")
        for k in ("ideal_bits_per_byte", "coded_bits_per_byte", "container_bits_per_byte",
                  "overhead_percent", "tokens_per_second", "kb_per_second"):
            d[k] = getattr(self, k)
        return d


def contexts_of(plan: Plan | LanePlan) -> np.ndarray:
    """History per scored token, in stream order: 1, 2, … from each chunk's or lane's BOS."""
    if isinstance(plan, LanePlan):
        return plan.context_lengths()
    return np.concatenate([np.arange(1, n + 1) for n in plan.lengths] or [np.zeros(0, dtype=np.int64)])


def _plan_header(plan: Plan | LanePlan, settings: Settings, shift: bool | None) -> dict:
    """What the decoder re-derives the plan from (checked against the plan's own size fields)."""
    if isinstance(plan, LanePlan):
        return {"policy": "lanes", "context": plan.context, "discard": plan.discard, "max_width": settings.width,
                "min_lane_tokens": settings.min_lane_tokens, "lanes": plan.n_lanes,
                "slide": "shift" if shift else "reeval"}
    return {"width": plan.width, "chunk_tokens": plan.chunk_tokens, "max_width": settings.width}


def compress(data: bytes, session: Session, settings: Settings | None = None, progress=None) -> tuple[bytes, Stats]:
    settings = (settings or Settings()).resolved(session.model)
    t0 = time.perf_counter()
    tok, plan = session.prepare(data, settings)
    tokens, offs = tok.tokens, plan.offsets()
    enc = range_coder.Encoder()
    n_escapes = len(session.vocab.escape_bytes)
    factor = entropy_model.TwoLevel.for_alphabet(session.vocab.n_symbols)
    piece_bits = np.zeros(len(plan.lengths))

    def step(piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        symbols = tokens[offs[piece_ids] + t]
        weights = entropy_model.weights(logits, n_escapes)
        piece_bits[piece_ids] += entropy_model.ideal_bits(weights, symbols)
        outer, inner = factor.tables(weights)
        blocks, within = factor.split(symbols)
        enc.encode(blocks, outer)
        enc.encode(within, inner(blocks))
        return session.vocab.model_input(symbols)

    shift = None
    if plan.lengths:
        ev = session.evaluator(plan, settings.threads)
        shift = getattr(ev, "shift", None)
        ev.run(plan, step, _on_step(progress, plan))
    payload = enc.finish()
    header = {
        "model": {"name": session.info.name, "sha256": session.info.sha256[:HASH_HEX]},
        **environment(settings),
        **_plan_header(plan, settings, shift),
        "start_token": session.model.start_token,
        "n_tokens": plan.n_tokens,  # with the plan fields, re-derives every lane or chunk length
        "fallback_bytes": tok.fallback_bytes,
        "vocab": session.vocab.fingerprint[:HASH_HEX],
        "block_symbols": factor.block,
        "original_bytes": len(data),
        "original_sha256": hashlib.sha256(data).hexdigest()[:HASH_HEX],
        "payload_words": int(len(payload)),
        "bpcbench": __version__,
    }
    blob = Container(header, payload, 2 if isinstance(plan, LanePlan) else 1).to_bytes()
    st = Stats.measured(data, tok, plan.lengths, piece_bits, contexts_of(plan), session.vocab, t0,
                        container_bytes=len(blob), coded_bytes=int(len(payload)) * 4, policy=settings.policy,
                        context=settings.context, lanes=len(plan.lengths))
    return blob, st


def _on_step(progress, plan):
    """Adapt a tqdm-like bar (reset(total=), update(n)) to the evaluator's per-step callback."""
    if progress is None:
        return None
    progress.reset(total=plan.n_tokens)
    return progress.update


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
            hint = {"threads": " (pass --threads {})", "n_gpu_layers": " (pass --n-gpu-layers {})"}.get(key, "{}")
            problems.append(f"{label} differs: file has {header.get(key)!r}, here {here.get(key)!r}"
                            + hint.format(header.get(key) if key in ("threads", "n_gpu_layers") else ""))
    if problems and not force:
        raise Mismatch(problems[0] + " (decoding could produce wrong bytes; --allow-mismatch tries anyway, the checksum still guards the output)")
    return problems


def decoder_plan(container: Container) -> tuple[Plan | LanePlan, bool | None]:
    """The plan (and slide mode) a header describes; a header whose fields disagree is refused
    before any model is loaded or any token decoded."""
    h = container.header
    try:
        if container.version == 1:
            if -(-h["n_tokens"] // h["chunk_tokens"]) > MAX_CHUNKS:
                raise CorruptInput(f"compressed file's chunk plan has more than {MAX_CHUNKS} chunks")
            plan = plan_chunks(h["n_tokens"], h["chunk_tokens"], h["max_width"])
            if plan.width != h["width"]:
                raise CorruptInput("compressed file's chunk plan is inconsistent (width)")
            return plan, None
        plan = plan_lanes(h["n_tokens"], h["max_width"], h["min_lane_tokens"], h["context"], h["discard"])
    except (BpcError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CorruptInput):
            raise
        raise CorruptInput(f"compressed file's lane plan is invalid ({exc})") from None
    if plan.n_lanes != h["lanes"] or h["slide"] not in ("shift", "reeval") or h["policy"] != "lanes":
        raise CorruptInput("compressed file's lane plan is inconsistent (lanes or slide)")
    return plan, h["slide"] == "shift"


def registry_name(model: dict) -> str:
    """The model a header names, if it is a registry name: a path in a file is never opened."""
    if model["name"] not in KNOWN_MODELS:
        raise BpcError(f"the file was compressed with model {model['name']!r} (sha256 {model['sha256']}…), "
                       f"which is not a registry model: pass --model PATH")
    return model["name"]


def _plan_settings(container: Container, threads: int | None, n_gpu_layers: int | None) -> Settings:
    h = container.header
    # Threads and offload come from the command line or the defaults, never from the file: the
    # file only records the encoder's, and check_compatible refuses a difference.
    s = Settings(threads=threads or default_threads(), n_gpu_layers=n_gpu_layers or 0, width=h["max_width"])
    if container.version == 1:
        return replace(s, policy="chunks", context=h["chunk_tokens"])
    return replace(s, policy="lanes", context=h["context"], discard=h["discard"], min_lane_tokens=h["min_lane_tokens"])


def decompress(blob: bytes, session: Session | None = None, model_spec: str | None = None,
               settings: Settings | None = None, force: bool = False, progress=None, *,
               threads: int | None = None, n_gpu_layers: int | None = None,
               max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> tuple[bytes, Stats]:
    """Restore the bytes of a .bpcz file.

    Threads and offload are `settings`', or `threads` / `n_gpu_layers`, or the defaults; never
    the file's, which only says what the encoder used (a difference is refused unless `force`); without
    `session`, the model is `model_spec` or the one the header names, loaded for this call.
    """
    t0 = time.perf_counter()
    container = Container.from_bytes(blob)
    h = container.header
    if h["original_bytes"] > max_output_bytes:
        raise BpcError(f"the file would decode to {h['original_bytes']:,} bytes, more than the limit of "
                       f"{max_output_bytes:,} (--max-output-bytes)")
    plan, shift = decoder_plan(container)
    settings = settings or _plan_settings(container, threads, n_gpu_layers)
    own = session is None
    if own:
        session = Session(model_spec or registry_name(h["model"]), n_gpu_layers=settings.n_gpu_layers)
    try:
        check_compatible(h, session.info.sha256, settings, force)
        tokens = _decode_tokens(container, session, plan, shift, settings.threads, progress)
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
               n_tokens=plan.n_tokens, n_chunks=len(plan.lengths), fallback_bytes=h["fallback_bytes"],
               lanes=len(plan.lengths), policy="lanes" if isinstance(plan, LanePlan) else "chunks",
               seconds=time.perf_counter() - t0)
    return data, st


def _decode_tokens(container: Container, session: Session, plan, shift, threads: int, progress) -> np.ndarray:
    h = container.header
    if session.model.start_token != h["start_token"] or session.vocab.fingerprint[:HASH_HEX] != h["vocab"]:
        raise Mismatch("the model's vocabulary differs from the one recorded in the file")
    factor = entropy_model.TwoLevel.for_alphabet(session.vocab.n_symbols)
    if h["block_symbols"] != factor.block:
        raise Mismatch("the file's probability tables are blocked differently from this model's")
    tokens = np.zeros(plan.n_tokens, dtype=np.int32)
    offs = plan.offsets()
    dec = range_coder.Decoder(container.payload)
    n_escapes = len(session.vocab.escape_bytes)

    def step(piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        weights = entropy_model.weights(logits, n_escapes)
        outer, inner = factor.tables(weights)
        blocks = dec.decode(outer)
        symbols = factor.join(blocks, dec.decode(inner(blocks)))
        if symbols.max() >= factor.n_symbols:
            raise CorruptInput("decoded a symbol outside the alphabet: the file does not match this model/build")
        tokens[offs[piece_ids] + t] = symbols
        return session.vocab.model_input(symbols)

    if plan.lengths:
        session.evaluator(plan, threads, shift=shift).run(plan, step, _on_step(progress, plan))
    return tokens
