"""compress: bytes -> tokens -> lockstep probabilities -> range coder -> container.

One descent: `Session.prepare` (codec/session.py) resolves the settings, tokenizes, makes the
plan and the fingerprint; `Session.encode` drives the plan's evaluator (llama/lanes.py) with the
encoder's step (codec/steps.py), which codes the tokens; `container.coded_header` writes the
header from what `prepare` returned. The decoder (codec/decompress.py) goes down the same way
through `Session.decode`, the same evaluator loop over the same plan with the decoder's step
beside the encoder's; that shared loop is what makes decoding bit-exact.

Bytes that are not text never reach the model: `split.text_ranges` cuts the input first, at
memory speed, and only the text ranges are tokenized and coded (joined, in one pass); the others
are zstd frames or stored, each a range of the container's segment map (format version 4). So
random or binary input is stored in well under a second instead of after the model ran over it.

A file is never much larger than its input: when the model's coding is not the smallest, the
container holds a zstd frame or the bytes themselves (one flag says which), so random data
costs its size plus a header of a few bytes, not the many bits per byte the model would spend
on it. With several lanes the choice is also made lane by lane (`_segmented`): a lane the model
codes worse than zstd or storing is kept that way (one byte per lane says how) and the other
lanes are coded again without it, so a text with a block of random bytes pays the model's
price only on the text. The bench and the ladder ask for the model's coding always, since that
is what they measure.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import zstandard

from bpcbench import stats
from bpcbench.codec import split
from bpcbench.codec.container import (
    HASH_BYTES,
    LANE_MODEL,
    LANE_STORED,
    LANE_ZSTD,
    RANGE_METHODS,
    Container,
    Header,
    coded_header,
    model_lanes,
)
from bpcbench.codec.payload import pay_for_cells
from bpcbench.codec.session import Prepared, Session, Settings
from bpcbench.codec.tokenization import Tokenized, Vocabulary

ZSTD_LEVEL = 19  # the fallback for data the model codes badly; its speed hardly matters beside the model's


@dataclass
class Stats:
    input_bytes: int = 0
    container_bytes: int = 0
    coded_bytes: int = 0  # the range coder's payload alone
    n_tokens: int = 0
    n_pieces: int = 0  # independently scored pieces, which the bootstrap resamples: lanes, or blocks of a lane
    fallback_bytes: int = 0
    ideal_bits: float = 0.0
    policy: str = ""
    context: int = 0  # the policy's window
    lanes: int = 0  # cold starts: each lane starts from BOS with no history
    context_mean: float = float("nan")  # tokens of history (BOS included) per scored token
    context_min: int = 0
    context_max: int = 0
    scored_bytes: int | None = None  # bytes of the tokens scored, where a policy scores only some (llama-perplexity)
    perplexity: float = float("nan")  # exp(mean −ln p), plain vocabulary softmax (window policies only)
    piece_bits: list = field(default_factory=list)  # ideal bits of each piece
    piece_bytes: list = field(default_factory=list)  # input bytes of each piece
    seconds: float = 0.0
    method: str = "model"  # how the container stores the data: model, zstd or stored (compress fallback)
    segment_lanes: int = 0  # lanes of a "model" file stored by zstd or as they are (compress fallback);
    # coded_bytes stays the model's coding of the whole input, whichever way the file stores it
    header_bytes: int = 0  # container bytes that are not payload (magic, header, CRC)
    # (method, bytes of the input, bytes in the file) of each byte range (split.py), in order; a
    # model range's file bytes are 0: the model's payload codes all of them together
    segments: list = field(default_factory=list)
    peak_rss_mb: float | None = None  # filled in by the caller, which measures with environment.PeakMemory
    mix: str = "none"  # what was mixed with the model's distribution (codec/mixing.py)
    mix_state: str = ""  # a hash of the mixer's state after the file (both ends must end equal)

    @property
    def ideal_bits_per_byte(self) -> float:
        return stats.bits_per_byte(self.ideal_bits,
                                   self.input_bytes if self.scored_bytes is None else self.scored_bytes)

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
            input_bytes=len(data), n_tokens=len(tok.tokens), n_pieces=len(lengths), fallback_bytes=tok.fallback_bytes,
            ideal_bits=float(piece_bits.sum()), piece_bits=piece_bits.tolist(),
            piece_bytes=[len(vocab.detokenize(tok.tokens[offs[i] : offs[i + 1]])) for i in range(len(lengths))],
            context_mean=float(contexts.mean()) if len(contexts) else float("nan"),
            context_min=int(contexts.min()) if len(contexts) else 0,
            context_max=int(contexts.max()) if len(contexts) else 0,
            seconds=time.perf_counter() - t0, **fields)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("piece_bits")
        d.pop("piece_bytes")
        d.pop("segments")
        for k in ("ideal_bits_per_byte", "coded_bits_per_byte", "container_bits_per_byte",
                  "overhead_percent", "tokens_per_second", "kb_per_second"):
            d[k] = getattr(self, k)
        return d


def compress(data: bytes, session: Session, settings: Settings | None = None, progress=None, *,
             fallback: bool = True) -> tuple[bytes, Stats]:
    """The .bpcz container of `data`, and what it cost. With `fallback`, the input is first cut
    into text and non-text ranges (split.py); only the text reaches the model, and the file is the
    smallest of the model's coding, zstd and the bytes stored as they are. Without, always the
    model's coding of every byte."""
    t0 = time.perf_counter()
    ranges = split.text_ranges(data) if fallback else []
    plain = Header("stored", len(data), hashlib.sha256(data).hexdigest()[: 2 * HASH_BYTES])
    if ranges and not any(is_text for is_text, _ in ranges):  # nothing for the model: it never runs
        container = min(_fallbacks(data, plain), key=lambda c: len(c.to_bytes()))
        blob = container.to_bytes()
        return blob, Stats(input_bytes=len(data), container_bytes=len(blob), method=container.header.method,
                           header_bytes=container.header_bytes, seconds=time.perf_counter() - t0,
                           segments=segment_stats(container))
    pieces = _pieces(data, ranges)
    text = b"".join(p for p, (is_text, _) in zip(pieces, ranges) if is_text) if len(ranges) > 1 else data
    job = session.prepare(text, settings)
    s, plan = job.settings, job.plan
    coded = session.encode(plan, job.tokens, s.threads, progress, s.mix)
    container = Container(coded_header("model", text, job, coded.shift), pay_for_cells(coded.payload, plan.kv_cells))
    piece_bits = coded.piece_bits
    candidates = [(container, coded.mix_state)]  # with the mixer's state after coding it ("" if none)
    if fallback:
        candidates += _segmented(container, job, piece_bits, session, progress)
        if len(ranges) > 1:
            apart = [None if is_text else _range_payload(p) for p, (is_text, _) in zip(pieces, ranges)]
            candidates = [(_with_ranges(c, plain, ranges, apart), state) for c, state in candidates]
        candidates += [(c, "") for c in _fallbacks(data, plain)]
    container, mix_state = min(candidates, key=lambda c: len(c[0].to_bytes()))
    blob = container.to_bytes()
    st = Stats.measured(text, job.tokenized, plan.lengths, piece_bits, plan.context_lengths(), session.vocab, t0,
                        container_bytes=len(blob), coded_bytes=len(coded.payload), policy=s.policy, context=s.context,
                        lanes=plan.n_lanes, method=container.header.method, header_bytes=container.header_bytes,
                        segment_lanes=sum(m != LANE_MODEL for m in container.header.lane_methods),
                        segments=segment_stats(container), mix=container.header.mix, mix_state=mix_state)
    st.input_bytes = len(data)
    st.scored_bytes = len(text) if text is not data else None  # the ideal bits are the text's
    return blob, st


def _pieces(data: bytes, ranges: list[tuple[bool, int]]) -> list[bytes]:
    ends = np.cumsum([0, *(n for _, n in ranges)]).tolist()
    return [data[a:b] for a, b in zip(ends[:-1], ends[1:])]


def _range_payload(piece: bytes) -> tuple[int, bytes]:
    """How a non-text range is stored: (LANE_ZSTD, its frame) or (LANE_STORED, its bytes)."""
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(piece)
    return (LANE_ZSTD, z) if len(z) + 3 < len(piece) else (LANE_STORED, piece)  # + its length varint


def _with_ranges(model: Container, plain: Header, ranges, apart) -> Container:
    """A model container of the text ranges joined, made the container of the whole input: the
    segment map, the other ranges' payloads, then the model's."""
    entries, payloads = [], []
    for (is_text, n), stored in zip(ranges, apart):
        if is_text:
            entries.append((LANE_MODEL, n, 0))
        else:
            entries.append((stored[0], n, len(stored[1])))
            payloads.append(stored[1])
    header = replace(model.header, original_bytes=plain.original_bytes, original_sha=plain.original_sha,
                     ranges=tuple(entries))
    return Container(header, b"".join(payloads) + model.payload)


def segment_stats(c: Container) -> list[tuple[str, int, int]]:
    """Stats.segments of a container: one entry per range of its segment map, or one for all of it."""
    h = c.header
    if not h.ranges:
        return [(h.method, h.original_bytes, len(c.payload))]
    return [(RANGE_METHODS[m], n, stored) for m, n, stored in h.ranges]


def _fallbacks(data: bytes, model: Header) -> list[Container]:
    plain = Header("stored", model.original_bytes, model.original_sha)
    return [Container(plain, data),
            Container(Header("zstd", plain.original_bytes, plain.original_sha),
                      zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))]


def lane_choice(raw: bytes, model_bits: float) -> tuple[int, bytes]:
    """How one lane is stored: (LANE_MODEL, b"") when the model's ideal bits are the cheapest,
    else (LANE_ZSTD or LANE_STORED, the segment)."""
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    method, seg = (LANE_ZSTD, z) if len(z) < len(raw) else (LANE_STORED, raw)
    return (method, seg) if len(seg) + 3 < model_bits / 8 else (LANE_MODEL, b"")  # + its length varint


def _segmented(whole: Container, job: Prepared, piece_bits: np.ndarray, session: Session,
               progress) -> list[tuple[Container, str]]:
    """The container with each lane stored the cheapest way, when some lane is cheaper as zstd
    or as it is than by the model (by its ideal bits, which the range coder meets closely); []
    if none is, or all are (the whole-file fallbacks cover that). The model's lanes are coded
    again without the others, since a batch without them is what the decoder will evaluate;
    with the mixer's state after them."""
    plan, tokens = job.plan, job.tokens
    if plan.n_lanes < 2:
        return []
    offs = plan.offsets()
    choices = [lane_choice(session.vocab.detokenize(tokens[offs[i] : offs[i + 1]]), piece_bits[i])
               for i in range(plan.n_lanes)]
    methods = [m for m, _ in choices]
    segments = [seg for m, seg in choices if m != LANE_MODEL]
    if all(m == LANE_MODEL for m in methods) or all(m != LANE_MODEL for m in methods):
        return []
    coded = model_lanes(plan, methods)  # the decoder's own rule for the plan it evaluates
    keep = np.concatenate([tokens[offs[i] : offs[i + 1]] for i, m in enumerate(methods) if m == LANE_MODEL])
    model = session.encode(coded, keep, job.settings.threads, progress, job.settings.mix)
    header = replace(whole.header, shift=model.shift, lane_methods=tuple(methods),
                     segment_bytes=tuple(len(s) for s in segments))
    beside = sum(len(s) for s in segments)
    return [(Container(header, b"".join(segments) + pay_for_cells(model.payload, coded.kv_cells, beside)),
             model.mix_state)]
