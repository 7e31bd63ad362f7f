"""How tests/data/codec-0.3.0/ was made: one .bpcz per container method, by bpcbench 0.3.0.

The files were made at git 594b614 (bpcbench 0.3.0, before the two coding evaluators became
one) with the tiny test model (tests/tiny_gguf.py, seed 0), so that test_fixtures.py can check
that later code decodes them byte for byte and codes their inputs to the same bytes, wherever
the codec fingerprint (llama.cpp build and CPU features, numpy, coder, vocabulary) and the
model are the ones recorded in manifest.json; elsewhere the decoder must refuse them.

Made with, from a checkout of 594b614 and this project's venv:

    PYTHONPATH=src:tests:tests/codec python tests/codec/codec_fixtures.py tests/data/codec-0.3.0

Each case says how it was made (`settings`, `fallback`, `tau`, `patch`), and `make` makes it
again with the code of the day (it uses only what both 0.3.0 and later code have): `patch`
"segments" is test_segments.compress_mixed (lanes stored apart, forced), "reeval" a KV cache
made unable to shift (lanes slide by evaluating their kept tokens again).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_segments import compress_mixed
from tiny_gguf import write_tiny_gguf

from bpcbench import corpora
from bpcbench.codec import compress as codec
from bpcbench.codec import lossy
from bpcbench.codec.container import Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Session, Settings
from bpcbench.llama import binding

TEXT = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
        "to do: once or twice she had peeped into the book her sister was reading. ").encode() * 3
LANES = {"context": 16, "discard": 4, "width": 3, "min_lane_tokens": 40, "threads": 1}
SEGMENTS = {"context": 16, "width": 8, "min_lane_tokens": 40, "threads": 1}
CASES = {
    "model-lanes": {"settings": LANES, "fallback": False},  # three lanes, each sliding
    "model-default": {"settings": {"threads": 1}, "fallback": False},  # the format's defaults: no EXPLICIT fields
    "model-reeval": {"settings": LANES, "fallback": False, "patch": "reeval"},
    "lossy": {"settings": LANES, "tau": 10.0},  # about two tokens in three stored, the rest greedy
    "zstd": {"settings": LANES, "fallback": True},
    "stored": {"settings": LANES, "fallback": True},
    "segments": {"settings": SEGMENTS, "patch": "segments"},
}
INPUTS = {
    "model-lanes": TEXT, "model-default": TEXT[:200], "model-reeval": TEXT, "lossy": TEXT, "zstd": b"a" * 300,
    "stored": bytes(range(40)),
    "segments": corpora.resolve("alice29").read_bytes()[:1500]
    + np.random.default_rng(3).integers(0, 256, 1500, dtype=np.uint8).tobytes(),
}


def make(session: Session, data: bytes, case: dict) -> bytes:
    """The container of `data` made as `case` says."""
    s = Settings(**case["settings"])
    if "tau" in case:  # fresh evaluators, as below: else the slide mode is that of the last file decoded
        session.close_evaluators()  # (the lossy files before codec-0.4.0-lossy2 were made after model-reeval's)
        blob = lossy.encode(data, session, s, case["tau"]).blob
        session.close_evaluators()
        return blob
    if case.get("patch") == "segments":
        return compress_mixed(session, data, s)[0]
    with pytest.MonkeyPatch.context() as mp:
        if case.get("patch") == "reeval":
            mp.setattr(binding.Context, "can_shift", property(lambda self: False))
        session.close_evaluators()
        blob = codec.compress(data, session, s, fallback=case["fallback"])[0]
        session.close_evaluators()
    return blob


def here(session: Session) -> tuple[str, str]:
    """(codec fingerprint, model sha256 prefix) as a file coded here records them."""
    h = Container.from_bytes(codec.compress(b"x", session, Settings(threads=1), fallback=False)[0]).header
    return h.codec, h.model_sha


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Session(str(write_tiny_gguf(Path(tmp) / "tiny.gguf", seed=0))) as ses:
        codec_here, model_here = here(ses)
        manifest = {}
        for name, case in CASES.items():
            blob = make(ses, INPUTS[name], case)
            decoded = decompress(blob, ses, settings=Settings(**case["settings"]))[0]
            for suffix, content in ((".in", INPUTS[name]), (".bpcz", blob), (".out", decoded)):
                (out / f"{name}{suffix}").write_bytes(content)
            manifest[name] = {**case, "method": Container.from_bytes(blob).header.method, "codec": codec_here,
                              "model_sha": model_here, "bpcz_sha256": hashlib.sha256(blob).hexdigest()}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
