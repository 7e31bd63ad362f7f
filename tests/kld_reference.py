"""The ladder's KLD statistics checked against llama.cpp's `llama-perplexity --kl-divergence`
(tests/ladder/test_kld_reference.py; test code, so it lives here and not in the package).

The reference tool is built from the sources of the installed llama-cpp-python wheel
(scripts/build_llama_tools.sh, `make llama-tools`) into `tool_path()`. It evaluates the base on
its windows of a text (`policies.llama_perplexity`: the second half of each `n_ctx`-token window
scored) and stores the base's log-probabilities in 16 bits per token (`--kl-divergence-base`),
then evaluates the level on the same tokens, read back from that file (`--kl-divergence`).

`reference_kld` evaluates base and level here on the same windows, each window alone from
position 0 (`PrefillEvaluator.window`), and scores them with the ladder's own code
(`scoring.block_scores`: float64, full vocabulary, nothing skipped; `scoring.summarise`: mean,
median, p99, same top). `parse_kld_output` reads the tool's printed statistics into the same names.

>>> out = '''Mean PPL(Q)                   :  17.1 ±   0.5
... Mean PPL(base)                :  16.9 ±   0.5
... Mean    KLD:   0.004912 ±   0.000120
... Maximum KLD:   0.120000
... 99.0%   KLD:   0.031000
... Median  KLD:   0.002500
... RMS Δp    :  2.100 ± 0.100 %
... Same top p: 96.100 ± 0.600 %'''
>>> r = parse_kld_output(out)
>>> r["kld_mean"], r["kld_p99"], r["kld_median"], r["top1_agreement_percent"], r["ppl_base"]
(0.004912, 0.031, 0.0025, 96.1, 16.9)
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from bpcbench import defaults
from bpcbench.codec import policies
from bpcbench.codec.session import Session
from bpcbench.ladder.scoring import Scores, block_scores, summarise
from bpcbench.llama.binding import Model
from bpcbench.llama.evaluation import PrefillEvaluator

_NUMBER = r"([-+]?[\d.]+(?:[eE][-+]?\d+)?|nan|inf)"
_PATTERNS = {  # summarise()'s names -> the line of llama-perplexity's final statistics
    "ppl": rf"Mean PPL\(Q\)\s*:\s*{_NUMBER}",
    "ppl_base": rf"Mean PPL\(base\)\s*:\s*{_NUMBER}",
    "kld_mean": rf"Mean\s+KLD:\s*{_NUMBER}",
    "kld_mean_uncertainty": rf"Mean\s+KLD:\s*\S+\s*±\s*{_NUMBER}",
    "kld_max": rf"Maximum KLD:\s*{_NUMBER}",
    "kld_p99": rf"99\.0%\s+KLD:\s*{_NUMBER}",
    "kld_median": rf"Median\s+KLD:\s*{_NUMBER}",
    "delta_p_rms_percent": rf"RMS Δp\s*:\s*{_NUMBER}",
    "top1_agreement_percent": rf"Same top p:\s*{_NUMBER}",
}


def tool_path(name: str = "llama-perplexity") -> Path:
    """Where `make llama-tools` installs a tool built from the installed wheel's llama.cpp."""
    version = metadata.version("llama-cpp-python")
    return defaults.cache_root() / "tools" / f"llama.cpp-{version}" / name


def parse_kld_output(text: str) -> dict[str, float]:
    """llama-perplexity --kl-divergence's final statistics, by the names `scoring.summarise` uses."""
    out, missing = {}, []
    for key, pattern in _PATTERNS.items():
        m = re.search(pattern, text)
        if m is None:
            missing.append(key)
        else:
            out[key] = float(m.group(1))
    if missing:
        raise ValueError(f"no {', '.join(missing)} in llama-perplexity's output (fewer than 100 scored "
                         f"tokens print no statistics): ...{text[-400:]}")
    return out


@dataclass
class Reference:
    summary: dict  # scoring.summarise's statistics, plus ppl and ppl_base
    tokens: np.ndarray  # the tokens of the windows, as llama-perplexity stores them (BOS not substituted)
    n_ctx: int


def _rows(ev: PrefillEvaluator, inputs: np.ndarray, w: policies.Window) -> np.ndarray:
    """The logits rows of one window's targets (a copy: llama.cpp reuses its buffer)."""
    return np.concatenate([np.array(rows) for _, rows in ev.window(inputs, w.first_row, len(w.targets))])


def window_scores(session: Session, level: Model, windows: list[policies.Window], threads: int) -> list[Scores]:
    """Per window: base and level fed the window's inputs alone (one llama_decode each), the
    targets scored by `scoring.block_scores`."""
    vocab, n_escapes = session.vocab, len(session.vocab.escape_bytes)
    width = max(len(w.inputs) for w in windows)
    out = []
    with PrefillEvaluator(session.model, context=width, threads=threads, block=width) as eb, \
            PrefillEvaluator(level, context=width, threads=threads, block=width) as eq:
        for w in windows:
            inputs = vocab.model_input(w.inputs)
            parts = block_scores(_rows(eb, inputs, w), _rows(eq, inputs, w), w.targets, n_escapes)
            out.append(Scores(len(vocab.detokenize(w.targets)), *parts))
    return out


def reference_kld(base: str, level: str, data: bytes, n_ctx: int = 512, threads: int = 1) -> Reference:
    """The ladder's KLD statistics of `level` against `base` on llama-perplexity's windows of `data`
    (read as `llama-perplexity -f FILE -c n_ctx` reads a file)."""
    with Session(base) as session, Model(level) as q:
        if q.n_vocab != session.model.n_vocab:
            raise ValueError(f"vocabularies differ: {q.n_vocab} and {session.model.n_vocab} tokens")
        model = session.model
        tokens = session.vocab.tokenize(policies.perplexity_text(data)).tokens
        windows = policies.llama_perplexity(tokens, model.start_token, model.add_bos, n_ctx)
        parts = window_scores(session, q, windows, threads)
        stream = np.concatenate([[model.start_token], tokens]) if model.add_bos else tokens
    summary = summarise(parts)
    # perplexities from the coder's bits: its escape symbols' 2^-16 of the mass adds ~1.5e-5 nats a token
    for key, bits in (("ppl", np.concatenate([p.bits for p in parts])),
                      ("ppl_base", np.concatenate([p.bits_base for p in parts]))):
        summary[key] = math.exp(float(bits.mean()) * math.log(2))
    return Reference(summary, np.asarray(stream[: len(windows) * n_ctx], dtype=np.int32), n_ctx)


def logits_file_tokens(path: str | Path) -> tuple[int, np.ndarray]:
    """(n_ctx, tokens) of a `--kl-divergence-base` file: "_logits_", n_ctx, n_vocab, n_chunk, tokens."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity logits file")
        n_ctx, _, n_chunk = np.frombuffer(fh.read(12), dtype="<i4").tolist()
        return n_ctx, np.frombuffer(fh.read(4 * n_ctx * n_chunk), dtype="<i4").copy()


def llama_kld(tool: str | Path, base: str, level: str, text_file: str | Path, logits_file: str | Path,
              n_ctx: int = 512, threads: int = 1) -> tuple[dict[str, float], list[list[str]]]:
    """Run the reference tool's two steps (base logits, then the level against them) with flash
    attention off; its statistics and the two command lines. (Its default batch of 2048 holds 4
    windows, where `window_scores` feeds one at a time; with `-b n_ctx` it printed the same figures.)"""
    common = ["-c", str(n_ctx), "-t", str(threads), "-fa", "off",
              "--kl-divergence-base", str(logits_file)]
    commands = [[str(tool), "-m", str(base), "-f", str(text_file), *common],
                [str(tool), "-m", str(level), *common, "--kl-divergence"]]
    outputs = []
    for cmd in commands:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-1000:]}")
        outputs.append(p.stdout + p.stderr)
    return parse_kld_output(outputs[1]), commands
