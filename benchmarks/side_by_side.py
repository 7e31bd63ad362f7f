"""bpcbench beside llama.cpp's own tools, on this machine, back to back (issue #22, "Done when").

For each model (SmolLM2 and Gemma 3 by default), in this order, with the same threads and
OMP_WAIT_POLICY (bpcbench sets it passive unless it is set; the tools inherit it), after one
warm-up of our kernels (llama-bench warms up too):

1. `llama-bench -p 256 -n 0 -d 1536 -t T -fa 0`: prefill of 256 tokens at depth 1536;
   beside it our ideal row, policy lanes, context 2048 (StreamEvaluator: one lane prefilled in
   blocks of 256, slid at 2048, every token scored by the kernel), tokens/s. llama-bench asks
   for the logits of a batch's last token only; a compressor needs every token's, which costs
   the output layer (vocabulary × embedding) per token: Gemma 3's 262,144 × 640 is more than
   the rest of the model. So a bare loop of the same prefill in-process (the same 256 tokens at
   depth 1536, one `llama_decode`, through bpcbench.llama.binding) is timed both ways, last
   logits only and all of them; the second is the ceiling of any row that scores every token.
2. Our coded row, one lane, context 2048 (compress, then decompress, compared byte for byte),
   tokens/s each way; beside it `llama-bench -p 0 -n 128 -d D`, a bare one-row llama_decode loop
   at D = the lane's mean depth.
3. `llama-perplexity -f FILE -c 512 -b 512 -t T -fa off`, the process's wall time and PPL;
   beside it our `llama-perplexity` policy on the same bytes (in-process seconds: no model load).

The last column is our speed over llama.cpp's (tokens/s over tokens/s, or its seconds over
ours): 1.00 is llama.cpp's own speed. The tools come from `make llama-tools` (the same llama.cpp
sources as the wheel). Run from a checkout:

    PYTHONPATH=src python benchmarks/side_by_side.py -t 2

On a shared machine, read the ratios (each pair ran back to back), not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpcbench import defaults
from bpcbench.codec import compress as coding
from bpcbench.codec import cross_entropy
from bpcbench.codec import decompress as decoding
from bpcbench.codec.session import Session, Settings
from bpcbench.corpora import load_manifest, take_prefix
from bpcbench.llama.binding import OMP_WAIT_POLICY, Batch, Context, Model, usable_cores

# scripts/ is not a package; the pin is defined once there (pyproject.toml, read by scripts/pins.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pins import exact_pin

LLAMA_CPP_PYTHON = exact_pin("llama-cpp-python")  # the tools are built from its sources
MODELS = {"smollm2-135m": "SmolLM2", "gemma3-270m": "Gemma 3"}


def tool(name: str) -> Path:
    path = defaults.cache_root() / "tools" / f"llama.cpp-{LLAMA_CPP_PYTHON}" / name
    if not os.access(path, os.X_OK):
        sys.exit(f"side_by_side: no {path}: run `make llama-tools` first")
    return path


def llama_bench(model: Path, threads: int, p: int, n: int, depth: int, reps: int) -> float:
    """tokens/s of llama-bench's one test (prefill p or generate n tokens at `depth`), mean of reps."""
    out = subprocess.run([str(tool("llama-bench")), "-m", str(model), "-p", str(p), "-n", str(n), "-d", str(depth),
                          "-t", str(threads), "-fa", "0", "-r", str(reps), "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    (test,) = json.loads(out)
    return float(test["avg_ts"])


def llama_perplexity(model: Path, text: Path, threads: int) -> tuple[float, float]:
    """(wall seconds of the process, its final PPL)."""
    t0 = time.perf_counter()
    run = subprocess.run([str(tool("llama-perplexity")), "-m", str(model), "-f", str(text), "-c", "512", "-b", "512",
                          "-t", str(threads), "-fa", "off"], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    if ppl is None:
        sys.exit(f"side_by_side: llama-perplexity printed no final PPL:\n{run.stderr[-2000:]}")
    return seconds, float(ppl.group(1))


def bare_prefill(path: Path, tokens, threads: int, all_logits: bool, reps: int,
                 depth: int = 1536, p: int = 256) -> float:
    """tokens/s of one `llama_decode` of `p` tokens at `depth` (best of reps, each on a fresh
    prefill of the depth), asking for the logits of the last token or of every token."""
    best = 0.0
    with Model(path) as model, Context(model, n_seq=1, n_ctx_per_seq=depth + p, n_batch=p, threads=threads) as ctx, \
            Batch(p) as batch:
        for _ in range(reps):
            ctx.clear()
            for at in range(0, depth + p, p):
                n = min(p, depth + p - at)
                batch.token[:n] = tokens[at : at + n]
                batch.pos[:n] = range(at, at + n)
                batch.set_seq_ids([0] * n)
                batch.logits[:n] = 1 if all_logits else 0
                batch.logits[n - 1] = 1
                t0 = time.perf_counter()
                batch.decode(ctx, n)
                seconds = time.perf_counter() - t0
            best = max(best, p / seconds)  # the last block is the one at `depth`
    return best


def rows_of(spec: str, data: dict[str, bytes], threads: int, reps: int, tmp: Path) -> list[tuple]:
    """(what, llama.cpp, ours, speed ratio) rows of one model, each pair measured back to back."""
    name = MODELS.get(spec, spec)
    rows = []
    with Session(spec) as session:
        path = Path(session.info.path)
        warm = data["coded"][:300]  # numba's kernels load from their cache on first use: not a row's time
        cross_entropy.cross_entropy(warm, session, Settings(context=2048, threads=threads))
        decoding.decompress(coding.compress(warm, session, Settings(context=2048, width=1, threads=threads),
                                            fallback=False)[0], session, threads=threads)
        ref = llama_bench(path, threads, 256, 0, 1536, reps)
        tokens = session.model.tokenize(data["ideal"])
        if len(tokens) < 1536 + 256:
            sys.exit(f"side_by_side: {name}: --ideal-bytes gives {len(tokens)} tokens, fewer than 1,792")
        last = bare_prefill(path, tokens, threads, False, reps)
        every = bare_prefill(path, tokens, threads, True, reps)
        st = cross_entropy.cross_entropy(data["ideal"], session, Settings(context=2048, threads=threads))
        ours = st.n_tokens / st.seconds
        rows.append((f"{name} ideal, lanes, ctx 2048, {len(data['ideal']):,} B: tok/s",
                     f"{ref:.1f} (`-p 256 -d 1536`)", f"{ours:.1f}", ours / ref))
        rows.append((f"{name} bare `llama_decode` of 256 at depth 1536, last token's logits: tok/s",
                     f"{ref:.1f} (`-p 256 -d 1536`)", f"{last:.1f}", last / ref))
        rows.append((f"{name} ideal over the bare loop with every token's logits: tok/s",
                     f"{every:.1f} (bare, all logits)", f"{ours:.1f}", ours / every))

        settings = Settings(context=2048, width=1, threads=threads)
        blob, enc = coding.compress(data["coded"], session, settings, fallback=False)
        back, dec = decoding.decompress(blob, session, threads=threads)
        if back != data["coded"]:
            sys.exit(f"side_by_side: {name}: the coded row did not decode to its input")
        depth = round(enc.context_mean)
        ref = llama_bench(path, threads, 0, 128, depth, reps)
        for way, s in (("compress", enc.seconds), ("decompress", dec.seconds)):
            ours = enc.n_tokens / s
            rows.append((f"{name} coded, 1 lane, ctx 2048, {len(data['coded']):,} B, {way}: tok/s",
                         f"{ref:.1f} (`-n 128 -d {depth}`)", f"{ours:.1f}", ours / ref))

        text = tmp / "ppl.txt"
        text.write_bytes(data["ppl"])
        ref_s, ref_ppl = llama_perplexity(path, text, threads)
        st = cross_entropy.cross_entropy(data["ppl"], session, Settings(policy="llama-perplexity", context=512,
                                                                        threads=threads))
        rows.append((f"{name} `llama-perplexity` policy, c 512, {len(data['ppl']):,} B: s (PPL)",
                     f"{ref_s:.1f} s ({ref_ppl:.4f})", f"{st.seconds:.1f} s ({st.perplexity:.4f})",
                     ref_s / st.seconds))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--threads", type=int, default=usable_cores(), help="threads for every row (default: cores)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names or GGUF paths")
    p.add_argument("--ideal-bytes", default="30000,12000",
                   help="alice29 prefix of the ideal and perplexity rows, per model (default 30000,12000)")
    p.add_argument("--coded-bytes", type=int, default=6000, help="alice29 prefix of the coded rows (default 6000)")
    p.add_argument("--reps", type=int, default=3, help="llama-bench repetitions (default 3)")
    args = p.parse_args(argv)
    specs = args.models.split(",")
    sizes = [int(x) for x in args.ideal_bytes.split(",")]
    sizes += sizes[-1:] * (len(specs) - len(sizes))
    alice = load_manifest()["alice29"].read_bytes()
    table = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for spec, size in zip(specs, sizes):
            data = {"ideal": take_prefix(alice, size), "ppl": take_prefix(alice, size),
                    "coded": take_prefix(alice, args.coded_bytes)}
            table += rows_of(spec, data, args.threads, args.reps, Path(tmp))
    print(f"threads {args.threads}, OMP_WAIT_POLICY={OMP_WAIT_POLICY}, {usable_cores()} usable cores, "
          f"load average before the end {os.getloadavg()[0]:.2f}, {time.perf_counter() - t0:.0f} s in all\n")
    print("| row | llama.cpp | bpcbench | bpcbench / llama.cpp (speed) |\n|---|--:|--:|--:|")
    for what, ref, ours, ratio in table:
        print(f"| {what} | {ref} | {ours} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
