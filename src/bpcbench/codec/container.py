"""The .bpcz file (format versions 3, 4 and 5): a binary header a few dozen bytes long, parsed by a
small strict reader, so that a truncated, bit-flipped or forged file fails with one line before
any model is loaded or any buffer is sized from it.

Layout (varint = unsigned LEB128, minimal, at most 8 bytes; fixed integers little-endian):

    b"BPCZ"  u8 version (3; 4 with something mixed or a segment map; 5 with lane groups)  u8 flags
    varint original_bytes    6 bytes: sha256(original)[:6]
    methods "model" and "lossy" only:
        varint n_tokens  varint threads  [flag OFFLOAD: varint n_gpu_layers]  (the encoder's, for messages)
        u8 model: 0 = named (u8 length, UTF-8 file name; never used as a path), k >= 1 = REGISTRY[k - 1]
        6 bytes: sha256(model)[:6]   4 bytes: codec fingerprint (build, numpy, coder, vocabulary)
        version 4 and 5 (always; "model" only): u8 mix, mixing.MODES[k]: what is mixed with the model's
                       distribution (0 nothing, 1 the match model); version 3 has no mix byte, mixes nothing
        version 5 (always): varint lane_groups, 2 to MAX_LANE_GROUPS: each position's lanes fed as that
                       many alternating llama_decode calls (llama/lanes.py wave_groups); 3 and 4 feed one
        flag EXPLICIT: varint context, varint width, lanes also varint discard, varint min_lane_tokens
                       (otherwise the defaults of this format, LANE_DEFAULTS)
        flag SEGMENTS ("model" only): one byte per lane of the plan, how it is stored (0 by the
                       model, 1 zstd, 2 stored), then a varint payload length per lane not by the model
        flag RANGES (version 4 or 5, "model" only): the segment map, byte ranges of the original in
                       order: varint count (2 to MAX_RANGES), then per range u8 method (0 by the
                       model, 1 zstd, 2 stored), varint length (>= 1), and for zstd a varint frame length;
                       n_tokens, the plan and SEGMENTS then describe the model ranges joined (text_bytes)
    payload: with RANGES, first the payload of each range not by the model, in order (a zstd
             frame or the range's bytes); with SEGMENTS, then the segments of the lanes not coded by
             the model, in lane order (a zstd frame or the lane's bytes); then the model's payload:
             "model": the range coder's 32-bit words, big-endian, trailing zero bytes trimmed
             (constriction reads missing words as zeros) as far as the decoder's payload check
             allows (entropy_model.min_code_bits);
             "lossy": one byte for tau (codec/lossy.py tau_byte), then the same for the flags and
             tokens of codec/lossy.py (original = the reconstruction);
             "zstd": one zstd frame; "stored": the original bytes
    u32 CRC-32 of everything before it

flags: bits 0-1 method (0 stored, 1 zstd, 2 model, 3 lossy); bit 2: version 3, the retired
padded-chunks layout of bpcbench <= 0.3.0 (refused, naming the release that reads it), versions 4
and 5, RANGES (a segment map follows); bit 3 lanes re-evaluate instead of shifting the KV cache; bit 4
EXPLICIT; bit 5 OFFLOAD (layers on a GPU); bit 6 SEGMENTS; bit 7 the chunks policy (else lanes).

The plan (llama/lanes.py make_plan) follows from the policy bit, n_tokens and the EXPLICIT
fields: lanes, min(width, ⌈n_tokens / min_lane_tokens⌉) lanes sliding by `discard` in a window
of `context`; chunks, ⌈n_tokens / context⌉ lanes that never slide, run `width` at a time; in
version 5's lane groups. The writer puts the format's defaults wherever they give the same plan.

Versions (docs/format.md says why): 4 is 3 plus the mix byte (always) and bit 2's segment map; 5
is 4 plus the lane groups (a bpcbench that reads only 3 and 4 refuses it by its version). A file
is written in the oldest version that holds it (Header.version): with nothing mixed, no map and
one lane group, version 3, byte for byte what bpcbench 0.4.0 wrote and reads. A version 4 file
needing neither is refused; an unknown mix id is a mismatch (exit 4: this bpcbench is too old for it).
Both are read under the rules below (stricter than 0.4.0's 512 tokens a byte); versions 1 and 2
(JSON, bpcbench 0.1) are refused naming the release that reads them.

Guarantees: the CRC is checked before any field is read; every field is typed and range-checked
(n_tokens <= the model's stream, at most MAX_PLAN_LANES lanes); the segment map whole before
anything is sized from it (count <= MAX_RANGES and within the bytes left, method bytes in range,
lengths >= 1 and within what is left of the original, summing to it, so ranges can neither
overlap nor leave gaps; neighbours of different methods; a model range); the payload against the
method: at most TOKENS_PER_PAYLOAD_BYTE tokens a byte beyond SLACK_TOKENS (entropy_model), a plan
of at most payload.kv_cells_paid KV cells: time and memory follow from the file's size, not its
claims. Nothing read here chooses threads, paths or allocation sizes beyond original_bytes.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bpcbench.codec import entropy_model, mixing
from bpcbench.codec.header_fields import Reader, varint
from bpcbench.codec.payload import kv_cells_paid
from bpcbench.codec.session import Prepared
from bpcbench.errors import BpcError, CorruptInput, Mismatch
from bpcbench.llama.lanes import MAX_LANE_GROUPS, MAX_LANES, Plan, make_plan
from bpcbench.models import SHA_PREFIX_DIGITS

MAGIC = b"BPCZ"
FORMAT_VERSION, READS = 5, (3, 4, 5)  # the newest this bpcbench writes; the versions it reads
METHODS = ("stored", "zstd", "model", "lossy")
CODED = ("model", "lossy")  # methods whose payload is range-coded under the model (the lossy one: codec/lossy.py)
REGISTRY = ("smollm2-135m", "gemma3-270m")  # ids 1, 2: part of the format; append only
LANE_DEFAULTS = {"context": 2048, "width": 32, "discard": 512, "min_lane_tokens": 8192}
PLAN_FIELDS = {"lanes": ("context", "width", "discard", "min_lane_tokens"), "chunks": ("context", "width")}
HASH_BYTES = SHA_PREFIX_DIGITS // 2  # original and model sha256 prefixes (48 bits): plenty to catch a wrong one
CODEC_BYTES = 4
MAX_ORIGINAL_BYTES = 1 << 48  # what any header may claim; decompress applies the user's own, smaller bound
_PADDED_CHUNKS, _REEVAL, _EXPLICIT, _OFFLOAD, _SEGMENTS, _CHUNKS = 4, 8, 16, 32, 64, 128
_RANGES = 4  # version 4's (and 5's) meaning of bit 2 (version 3's retired padded chunks): a segment map follows
LANE_MODEL, LANE_ZSTD, LANE_STORED = 0, 1, 2  # how a lane of a SEGMENTS file, or a byte range, is stored
RANGE_METHODS = ("model", "zstd", "stored")  # names of LANE_MODEL, LANE_ZSTD, LANE_STORED
MAX_RANGES = 1024  # byte ranges of one segment map (split.py never makes more)
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Header:
    """What a decoder needs; "model" fields are empty for the stored and zstd methods."""

    method: str
    original_bytes: int
    original_sha: str  # hex, HASH_BYTES bytes
    n_tokens: int = 0
    policy: str = "lanes"  # or "chunks": the layout of the plan
    shift: bool = True  # lanes slide by llama.cpp's KV shift (else by re-evaluation)
    context: int = LANE_DEFAULTS["context"]  # lanes: KV window; chunks: most tokens per chunk
    width: int = LANE_DEFAULTS["width"]
    discard: int = LANE_DEFAULTS["discard"]  # lanes only
    min_lane_tokens: int = LANE_DEFAULTS["min_lane_tokens"]  # lanes only
    threads: int = 0
    n_gpu_layers: int = 0
    model_name: str = ""
    model_sha: str = ""  # hex, HASH_BYTES bytes
    codec: str = ""  # hex, CODEC_BYTES bytes
    lane_methods: tuple[int, ...] = ()  # SEGMENTS: LANE_* of each lane of the plan; () = every lane by the model
    segment_bytes: tuple[int, ...] = ()  # SEGMENTS: payload bytes of each lane not coded by the model, in order
    mix: str = "none"  # "model" only: what is mixed with the model's distribution (mixing.MODES)
    # version 4's segment map: (LANE_* method, bytes of the original, bytes in the payload) of each
    # byte range in order; () = the whole original is the model's (or the method's) stream
    ranges: tuple[tuple[int, int, int], ...] = ()
    lane_groups: int = 1  # "model" only: alternating lane groups per wave (Plan.groups); version 5 when not 1

    @property
    def text_bytes(self) -> int:
        """Bytes of the model's stream: the model ranges joined, or the whole original."""
        if not self.ranges:
            return self.original_bytes
        return sum(n for m, n, _ in self.ranges if m == LANE_MODEL)

    @property
    def range_payload_bytes(self) -> int:
        return sum(p for _, _, p in self.ranges)

    @property
    def version(self) -> int:
        """The oldest format that holds this file (3 is what bpcbench 0.4.0 wrote and reads)."""
        if self.lane_groups != 1:
            return 5
        return 4 if self.mix != "none" or self.ranges else 3

    def explicit(self) -> bool:
        return any(getattr(self, k) != LANE_DEFAULTS[k] for k in PLAN_FIELDS[self.policy])

    def plan(self) -> Plan:
        """The plan this header describes, bounded before anything is allocated from it."""
        try:
            return make_plan(self.policy, self.n_tokens, width=self.width, min_lane_tokens=self.min_lane_tokens,
                             context=self.context, discard=self.discard, groups=self.lane_groups)
        except BpcError as exc:
            raise CorruptInput(f"compressed file's {self.policy} plan is invalid ({exc})") from None


def coded_header(method: str, data: bytes, job: Prepared, shift: bool) -> Header:
    """The header of a model-coded container (lossless, or lossy with `data` the reconstruction).

    The header only has to give the decoder the plan back, so the format's default width and
    lane length are written wherever they give the same plan: a file then pays for explicit
    fields (EXPLICIT) only when its plan needs them, whatever the encoder's defaults.
    """
    s, plan = job.settings, job.plan
    given = {"context": plan.context, "width": s.width, "discard": plan.discard, "min_lane_tokens": s.min_lane_tokens}
    fields = {k: given[k] if k in PLAN_FIELDS[s.policy] else v for k, v in LANE_DEFAULTS.items()}
    h = Header(method, len(data), hashlib.sha256(data).hexdigest()[: 2 * HASH_BYTES], n_tokens=plan.n_tokens,
               policy=s.policy, shift=shift, threads=s.threads, n_gpu_layers=s.n_gpu_layers,
               model_name=job.model.name, model_sha=job.model.sha256[: 2 * HASH_BYTES], codec=job.codec,
               mix=s.mix, lane_groups=s.lane_groups, **fields)
    if method != "model" and (s.mix != "none" or s.lane_groups != 1):
        raise BpcError(f"--mix {s.mix} and --lane-groups {s.lane_groups} are for the lossless codec only")
    short = replace(h, width=LANE_DEFAULTS["width"], min_lane_tokens=LANE_DEFAULTS["min_lane_tokens"])
    return short if short.plan() == plan else h


def model_lanes(plan: Plan, lane_methods: Sequence[int]) -> Plan:
    """The plan the model codes: lanes stored otherwise (a SEGMENTS file) have no tokens, so the
    evaluator leaves them out of every batch, on both ends alike (the waves stay as they were)."""
    if not lane_methods:
        return plan
    return replace(plan, lengths=tuple(n if m == LANE_MODEL else 0 for n, m in zip(plan.lengths, lane_methods)))


@dataclass(frozen=True)
class Container:
    header: Header
    payload: bytes

    @property
    def header_bytes(self) -> int:
        """Everything but the payload: magic, header fields and CRC."""
        return len(_pack_header(self.header)) + _CRC.size

    @property
    def range_payloads(self) -> list[bytes]:
        """The payloads of the byte ranges (version 4's segment map), in order; b"" for a model range."""
        ends = np.cumsum([0, *(p for _, _, p in self.header.ranges)])
        return [self.payload[a:b] for a, b in zip(ends[:-1], ends[1:])]

    @property
    def segments(self) -> list[bytes]:
        """The payloads of the lanes not coded by the model (SEGMENTS), in lane order."""
        ends = self.header.range_payload_bytes + np.cumsum([0, *self.header.segment_bytes])
        return [self.payload[a:b] for a, b in zip(ends[:-1], ends[1:])]

    @property
    def model_payload(self) -> bytes:
        """The range coder's part of the payload (all of it without SEGMENTS and ranges)."""
        return self.payload[self.header.range_payload_bytes + sum(self.header.segment_bytes):]

    def to_bytes(self) -> bytes:
        body = _pack_header(self.header) + self.payload
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Container":
        if len(blob) < 4 or blob[:4] != MAGIC:
            raise CorruptInput("not a bpcbench compressed file (bad magic)")
        if len(blob) < 6 + _CRC.size:
            raise CorruptInput("compressed file is truncated (shorter than its header)")
        if blob[4] in (1, 2) and blob[5] == 0:
            raise CorruptInput(f"format version {blob[4]} (bpcbench 0.1, JSON header) is no longer read: "
                               "decompress it with bpcbench 0.1.0 (git 3b4bf35), which reads versions 1 and 2")
        if blob[4] not in READS:
            raise CorruptInput(f"unsupported format version {blob[4]}: this bpcbench reads versions "
                               f"{READS[0]} to {READS[-1]}")
        body = memoryview(blob)[: -_CRC.size]
        if zlib.crc32(body) != _CRC.unpack_from(blob, len(blob) - _CRC.size)[0]:  # before any field is used
            raise CorruptInput("compressed file is corrupt or truncated: CRC-32 mismatch")
        reader = Reader(body, 5)
        header = _read_header(reader, blob[4])
        payload = bytes(body[reader.pos :])
        _check_payload(header, payload)
        return cls(header, payload)


def _pack_header(h: Header) -> bytes:
    flags = METHODS.index(h.method) | (_CHUNKS if h.policy == "chunks" else 0)
    flags |= (0 if h.shift else _REEVAL) | (_EXPLICIT if h.explicit() else 0) | (_OFFLOAD if h.n_gpu_layers else 0)
    flags |= (_SEGMENTS if h.lane_methods else 0) | (_RANGES if h.ranges else 0)
    out = bytearray(MAGIC + bytes([h.version, flags]))
    out += varint(h.original_bytes) + bytes.fromhex(h.original_sha)
    if h.method not in CODED:
        return bytes(out)
    out += varint(h.n_tokens) + varint(h.threads) + (varint(h.n_gpu_layers) if h.n_gpu_layers else b"")
    if h.model_name in REGISTRY:
        out.append(REGISTRY.index(h.model_name) + 1)
    else:
        name = h.model_name.encode()
        out += bytes([0, len(name)]) + name
    out += bytes.fromhex(h.model_sha) + bytes.fromhex(h.codec)
    if h.version >= 4:
        out.append(mixing.MODES.index(h.mix))
    if h.version == 5:
        out += varint(h.lane_groups)
    if h.explicit():
        out += varint(h.context) + varint(h.width)
        if "discard" in PLAN_FIELDS[h.policy]:
            out += varint(h.discard) + varint(h.min_lane_tokens)
    if h.lane_methods:
        out += bytes(h.lane_methods) + b"".join(map(varint, h.segment_bytes))
    if h.ranges:
        out += varint(len(h.ranges))
        for method, n, stored in h.ranges:
            out += bytes([method]) + varint(n) + (varint(stored) if method == LANE_ZSTD else b"")
    return bytes(out)


def _read_header(r: Reader, version: int) -> Header:
    flags = r.take(1, "flags")[0]
    method = METHODS[flags & 3]
    if version >= 4:
        if method != "model":
            raise CorruptInput(f"compressed file of format version {version} has the {method} method (version "
                               f"{version} is for the model method only)")
    elif method in CODED and flags & _PADDED_CHUNKS:
        raise CorruptInput("compressed file was made by the retired padded-chunks layout of bpcbench <= 0.3.0, "
                           "which this version cannot reproduce: decompress it with bpcbench 0.3.0 (git 594b614)")
    original = r.varint("original_bytes", 0, MAX_ORIGINAL_BYTES)
    h = Header(method, original, r.take(HASH_BYTES, "original_sha").hex())
    if method not in CODED:
        if flags & ~3:
            raise CorruptInput(f"compressed file's header has flags {flags:#04x} without the model method")
        return h
    n_tokens = r.varint("n_tokens", 0, original)  # a token spells at least one byte
    threads = r.varint("threads", 1, 1 << 20)
    ngl = r.varint("n_gpu_layers", 1, 1 << 20) if flags & _OFFLOAD else 0
    h = replace(h, n_tokens=n_tokens, threads=threads, n_gpu_layers=ngl,
                policy="chunks" if flags & _CHUNKS else "lanes", shift=not flags & _REEVAL,
                model_name=_model_name(r), model_sha=r.take(HASH_BYTES, "model_sha").hex(),
                codec=r.take(CODEC_BYTES, "codec").hex())
    if version >= 4:
        h = replace(h, mix=_mix_mode(r))
    if version == 5:  # 1 is version 3's or 4's: no writer makes a version 5 file of one group
        h = replace(h, lane_groups=r.varint("lane_groups", 2, MAX_LANE_GROUPS))
    if flags & _EXPLICIT:
        h = replace(h, context=r.varint("context", 2, 1 << 24), width=r.varint("width", 1, MAX_LANES))
        if "discard" in PLAN_FIELDS[h.policy]:
            h = replace(h, discard=r.varint("discard", 1, h.context - 1),
                        min_lane_tokens=r.varint("min_lane_tokens", 1, MAX_ORIGINAL_BYTES))
    h = _read_segments(r, h) if flags & _SEGMENTS else h
    if version >= 4 and flags & _RANGES:
        h = _read_ranges(r, h)
        if h.n_tokens > h.text_bytes:
            raise CorruptInput(f"compressed file's header field 'n_tokens' is out of range: {h.n_tokens}")
    if version == 4 and h.version != 4:  # the writer makes version 3 of a file that needs nothing of 4
        raise CorruptInput("compressed file of format version 4 has nothing mixed and no segment map")
    return h


def _read_ranges(r: Reader, h: Header) -> Header:
    """Version 4's segment map, checked whole as the module docstring says (a range takes at
    least two bytes, so a count beyond half the bytes left is forged)."""
    count = r.varint("segment count", 2, MAX_RANGES)
    if 2 * count > len(r.data) - r.pos:
        raise CorruptInput(f"compressed file's segment count ({count}) is more than its header holds")
    ranges, covered = [], 0
    for i in range(count):
        method = r.take(1, "segment method")[0]
        if method > LANE_STORED:
            raise CorruptInput(f"compressed file's segment {i} has method byte {method}, out of range")
        if ranges and ranges[-1][0] == method:
            raise CorruptInput(f"compressed file's segments {i - 1} and {i} have the same method")
        n = r.varint("segment length", 1, MAX_ORIGINAL_BYTES)
        if covered + n > h.original_bytes:
            raise CorruptInput(f"compressed file's segment {i} runs past the end of the original "
                               f"({covered + n:,} > {h.original_bytes:,} bytes)")
        covered += n
        stored = r.varint("segment frame bytes", 1, MAX_ORIGINAL_BYTES) if method == LANE_ZSTD else (
            n if method == LANE_STORED else 0)
        ranges.append((method, n, stored))
    if covered != h.original_bytes:
        raise CorruptInput(f"compressed file's segments cover {covered:,} of its {h.original_bytes:,} bytes")
    if all(m != LANE_MODEL for m, _, _ in ranges):
        raise CorruptInput("compressed file's segment map has no range for the model")
    return replace(h, ranges=tuple(ranges))


def _read_segments(r: Reader, h: Header) -> Header:
    """The lane map of a SEGMENTS file: one method byte per lane of the plan the header implies
    (at most MAX_PLAN_LANES, and no more than the file holds), some not by the model; a payload
    length for each of those."""
    if h.method != "model":
        raise CorruptInput("compressed file's header has lane segments outside the model method")
    n_lanes = h.plan().n_lanes
    methods = tuple(r.take(n_lanes, "lane methods"))
    if any(m > LANE_STORED for m in methods) or all(m == LANE_MODEL for m in methods):
        raise CorruptInput("compressed file's lane methods are invalid")
    sizes = tuple(r.varint("segment bytes", 1, h.original_bytes) for m in methods if m != LANE_MODEL)
    return replace(h, lane_methods=methods, segment_bytes=sizes)


def _mix_mode(r: Reader) -> str:
    """A version 4 file's mix byte: a mode this version knows (another is a newer bpcbench's, exit 4)."""
    ident = r.take(1, "mix")[0]
    if ident >= len(mixing.MODES):
        raise Mismatch(f"compressed file was made with mix mode id {ident}, which this bpcbench does not know "
                       f"(it knows {', '.join(mixing.MODES[1:])}): decode it with the bpcbench that wrote it")
    return mixing.MODES[ident]


def _model_name(r: Reader) -> str:
    """A registry name, or a file name kept for messages only: printable, no path separators."""
    ident = r.take(1, "model")[0]
    if ident:
        if ident > len(REGISTRY):
            raise CorruptInput(f"compressed file names an unknown registry model (id {ident})")
        return REGISTRY[ident - 1]
    raw = r.take(r.take(1, "model name length")[0], "model name")
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        name = ""
    if not name or not name.isprintable() or any(c in name for c in "/\\") or name in (".", ".."):
        raise CorruptInput("compressed file's model name is not a plain file name")
    return name


def _check_payload(h: Header, payload: bytes) -> None:
    lane_bytes, range_bytes = sum(h.segment_bytes), h.range_payload_bytes
    n_tokens, coded = h.n_tokens, len(payload) - lane_bytes - range_bytes
    if coded < 0 or lane_bytes > h.text_bytes:
        raise CorruptInput("compressed file's lane segments or byte ranges are longer than its payload or its original")
    if h.lane_methods:
        lengths = h.plan().lengths
        n_tokens = sum(n for n, m in zip(lengths, h.lane_methods) if m == LANE_MODEL)
    if h.method in CODED and n_tokens > entropy_model.max_tokens(coded):
        raise CorruptInput(f"compressed file claims {n_tokens:,} tokens, more than its {coded:,}-byte "
                           f"payload can hold (at most {entropy_model.TOKENS_PER_PAYLOAD_BYTE} a byte; bpcbench "
                           "<= 0.4.0 allowed 512: a real file of that kind decodes with 0.4.0)")
    if h.method in CODED and (cells := h.plan().kv_cells) > kv_cells_paid(coded + lane_bytes):
        raise CorruptInput(f"compressed file's plan needs {cells:,} KV cells, more than the limit of "
                           f"{kv_cells_paid(coded + lane_bytes):,} that its {coded + lane_bytes:,}-byte payload pays "
                           "for (a forged plan)")
    if h.method == "stored" and len(payload) != h.original_bytes:
        raise CorruptInput("compressed file's stored data does not match its length")
    if h.method == "zstd" and not payload:
        raise CorruptInput("compressed file's zstd frame is empty")
