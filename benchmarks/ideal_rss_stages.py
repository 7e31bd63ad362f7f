"""Where an ideal row's memory goes, stage by stage: `python benchmarks/ideal_rss_stages.py MODEL FILE BYTES`.

Evaluates the first BYTES of FILE as cross_entropy's lanes policy does (StreamEvaluator over one
lane, entropy_model.ideal per block), and after each stage prints this process's VmHWM (the
peak since the previous stage: /proc/self/clear_refs is reset after each line), VmRSS, RssAnon
and RssFile in MiB: imports, model load, our Vocabulary, the context (KV cache), the first
llama_decode (llama.cpp's compute and output buffers are touched there), the first kernel call
(numba loads its cached machine code) and the rest. `--rows N` gives the measuring evaluator N
logits rows per llama_decode call instead of lanes.prefill_block's (llama.cpp's compute buffer
and output buffer each hold rows x vocabulary float32). `--log` prints llama.cpp's buffer sizes.
Linux only (/proc). Figures: docs/measurements.md (issue #22 item 4).
"""

from __future__ import annotations

import argparse
import time

T0 = time.perf_counter()


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) // 1024
    return out


def mark(stage: str) -> None:
    d = _status()
    print(f"{stage:24s} peak {d['VmHWM']:5d}  rss {d['VmRSS']:5d}  anon {d['RssAnon']:5d}  "
          f"file {d['RssFile']:5d} MiB  t={time.perf_counter() - T0:6.1f} s", flush=True)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


mark("start")
import numpy as np  # noqa: E402  (after the first mark: the imports are a stage)

from bpcbench.codec import entropy_model, kernel  # noqa: E402
from bpcbench.codec.cross_entropy import ideal_plan  # noqa: E402
from bpcbench.codec.session import Settings  # noqa: E402
from bpcbench.codec.tokenization import Vocabulary  # noqa: E402
from bpcbench.llama import binding, lanes  # noqa: E402
from bpcbench.models import describe  # noqa: E402

mark("imports")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("file")
    ap.add_argument("bytes", type=int)
    ap.add_argument("--rows", type=int, default=0, help="logits rows per llama_decode call (0: prefill_block's)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--log", action="store_true")
    a = ap.parse_args()
    with open(a.file, "rb") as fh:
        data = fh.read()[: a.bytes]
    with binding.capture_log() as log:
        model = binding.Model(describe(a.model).path)
    mark("model")
    vocab = Vocabulary.from_model(model)
    mark("vocabulary")
    settings = Settings(threads=a.threads, context=a.context).resolved(model)
    tokens = vocab.tokenize(data).tokens
    plan = ideal_plan(len(tokens), settings)
    kernel.set_threads(a.threads)
    if a.rows:  # the budget that gives exactly a.rows rows of this vocabulary
        lanes.PREFILL_LOGITS_BYTES = a.rows * 4 * model.n_vocab
    with binding.capture_log() as ctx_log:
        ev = lanes.StreamEvaluator(model, context=plan.context, discard=plan.discard, threads=a.threads)
    mark(f"context ({ev.block} rows)")
    bits = np.zeros(len(tokens))
    t, cpu = time.perf_counter(), time.process_time()
    for i, (first, logits) in enumerate(ev.blocks(vocab.model_input(tokens))):
        if i == 0:
            mark("first llama_decode")
        symbols = tokens[first : first + len(logits)]
        bits[first : first + len(logits)] = entropy_model.ideal(logits, symbols, len(vocab.escape_bytes))[0]
        if i == 0:
            mark("first kernel call")
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    mark("the rest")
    print(f"{bits.sum() / len(data):.9f} bits/byte, {len(tokens)} tokens, {ev.block} rows a call, "
          f"evaluation {wall:.2f} s wall, {cpu:.2f} s CPU")
    ev.close()
    if a.log:
        print("".join(ln for ln in (log.text + ctx_log.text).splitlines(True) if "buffer size" in ln))


if __name__ == "__main__":
    main()
