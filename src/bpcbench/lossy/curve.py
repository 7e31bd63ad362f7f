"""Rate-distortion curves: for each model, text and tau, a real lossy file, decoded and checked.

Each row is a container that was written, decoded again and found to rebuild exactly the
reconstruction the encoder reported (sha256); a row whose decode differs is marked failed and
gets no numbers. The lossless point (the ordinary codec, same model and window) is a row
too, with tau empty. Rate is the whole container, header included, per byte of the original.

`dominated` names a point that makes a lossy point pointless: "lossless" when the lossless file
is smaller (it has no distortion at all), else "tau=T" when a smaller tau (T, the cheapest such)
gives a smaller file; empty otherwise. Forgiving more can cost more because the model is fed
its own reconstruction: once that leaves the original, the original's later tokens are less
predictable (docs/lossy.md has the measured cases).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bpcbench import corpora, stats
from bpcbench.atomic import write_bytes, write_text
from bpcbench.codec import lossy
from bpcbench.codec.compress import compress
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Session, Settings
from bpcbench.errors import BpcError
from bpcbench.levels import level_files
from bpcbench.lossy.distortion import MEASURES, measure

COLUMNS = ("model", "model_sha256", "model_quant_type", "corpus", "corpus_bytes", "context", "tau", "bits_per_byte",
           "container_bytes", "header_bytes", "n_tokens", "stored_tokens", *MEASURES, "dominated",
           "reconstruction_sha256", "roundtrip_ok", "encode_seconds", "decode_seconds")


def parse_taus(text: str) -> list[float]:
    """'0,1,2,inf' -> [0.0, 1.0, 2.0, inf]; anything else is one line."""
    try:
        taus = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BpcError(f"--taus must be comma-separated numbers of bits or inf, got {text!r}") from None
    if not taus or any(not t >= 0 for t in taus):
        raise BpcError(f"--taus must be numbers >= 0 (or inf), got {text!r}")
    for t in taus:  # what a lossy file can record (quarter bits): refused before any model is loaded
        lossy.tau_byte(t)
    return sorted(set(taus))


@dataclass
class Text:
    name: str
    data: bytes


def load_texts(specs: Sequence[str], max_bytes: int) -> list[Text]:
    out = []
    for name in corpora.expand(specs):
        c = corpora.resolve(name)
        data = corpora.take_prefix(c.path.read_bytes(), max_bytes)
        if not data:
            raise BpcError(f"{c.name}: empty text: nothing to reconstruct")
        out.append(Text(c.name, data))
    return out


def curve(session: Session, text: Text, taus: Sequence[float], settings: Settings,
          log: Callable[[str], None] = lambda m: None,
          label: str | None = None) -> tuple[list[dict], dict[float, bytes]]:
    """The rows of one (model, text) curve, lossless point first, and each tau's reconstruction.
    `label` names the model in the rows (default: its file's name)."""
    s = settings.resolved(session.model)
    label = label or session.info.name
    base = {"model": label, "model_sha256": session.info.sha256, "model_quant_type": session.info.quant_type,
            "corpus": text.name,
            "corpus_bytes": len(text.data), "context": s.context}
    blob, st = compress(text.data, session, s, fallback=False)
    back, dst = decompress(blob, session, settings=s)
    ok = back == text.data
    rows = [{**base, "tau": "", "bits_per_byte": stats.bits_per_byte(8 * len(blob), len(text.data)) if ok else "",
             "container_bytes": len(blob), "header_bytes": st.header_bytes, "n_tokens": st.n_tokens,
             "stored_tokens": st.n_tokens, **{m: 0.0 for m in MEASURES},
             "reconstruction_sha256": hashlib.sha256(back).hexdigest(), "roundtrip_ok": ok,
             "encode_seconds": round(st.seconds, 3), "decode_seconds": round(dst.seconds, 3)}]
    recons = {}
    for tau in taus:
        r = lossy.encode(text.data, session, s, tau)
        back, dst = decompress(r.blob, session, settings=s)
        ok = back == r.reconstruction
        recons[tau] = r.reconstruction
        row = {**base, "tau": tau, "container_bytes": len(r.blob), "header_bytes": r.header_bytes,
               "n_tokens": len(r.tokens), "stored_tokens": r.stored_tokens,
               "reconstruction_sha256": hashlib.sha256(r.reconstruction).hexdigest(), "roundtrip_ok": ok,
               "encode_seconds": round(r.seconds, 3), "decode_seconds": round(dst.seconds, 3)}
        if ok:  # a failed round trip is never reported as a result
            row["bits_per_byte"] = stats.bits_per_byte(8 * len(r.blob), len(text.data))
            row.update(measure(text.data, r.reconstruction, r.original_tokens, r.tokens))
        rows.append(row)
        log(f"{label} {text.name} tau={tau:g}: {row.get('bits_per_byte', float('nan')):.4f} bits/byte, "
            f"{r.stored_tokens}/{len(r.tokens)} tokens stored, round trip {'ok' if ok else 'FAILED'}")
    mark_dominated(rows)
    return rows, recons


def mark_dominated(rows: list[dict]) -> None:
    """Fill `dominated` in one curve's rows (lossless point first, then tau ascending; see the module doc)."""
    lossless = rows[0]["bits_per_byte"]
    best: tuple[float, float] | None = None  # (rate, tau) of the cheapest point of a smaller tau so far
    for r in rows:
        r["dominated"] = ""
        if r["tau"] == "" or r["bits_per_byte"] == "":
            continue
        rate = r["bits_per_byte"]
        if lossless != "" and rate > lossless:
            r["dominated"] = "lossless"
        elif best is not None and rate > best[0]:
            r["dominated"] = f"tau={best[1]:g}"
        if best is None or rate < best[0]:
            best = (rate, r["tau"])


def model_list(specs: Sequence[str], quant: Sequence[str] = (), threads: int | None = None,
               log: Callable[[str], None] = lambda m: None) -> list[tuple[str | None, str]]:
    """(label or None for the file's own name, model) of every model to measure: each spec as
    given, then each quantization level of it (made before any model is measured, so a level
    llama.cpp cannot make is an error before the long part)."""
    out: list[tuple[str | None, str]] = [(None, spec) for spec in specs]
    for spec in specs if quant else ():
        log(f"quantizing {spec} to {','.join(quant)} (cached after the first time)")
        out += level_files(spec, quant, threads=threads)
    return out


def run_curves(models: list[tuple[str | None, str]], texts: list[Text], taus: Sequence[float], settings: Settings,
               out: Path, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Every (model, text) curve, into out/lossy.csv, with each reconstruction at the smallest
    tau > 0 beside it: what `bpcbench lossy` and a matrix's [lossy] table run (the caller draws
    lossy.png from the rows: report.curves.plot_rate_distortion)."""
    rows, smallest = [], min([t for t in taus if t > 0], default=None)
    for label, spec in models:
        with Session(spec) as session:
            for text in texts:
                got, recons = curve(session, text, taus, settings, log, label=label)
                rows += got
                if smallest is not None:
                    save_reconstruction(out, label or session.info.name, text.name, smallest, recons[smallest])
    write_csv(rows, out / "lossy.csv")
    return rows


def run_table(plan, out: Path, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """A bench matrix's [lossy] table (bench.matrix.LossyPlan, threads resolved): its curves."""
    models = model_list(plan.models, plan.quant, plan.threads, log)
    return run_curves(models, load_texts(plan.corpora, plan.max_bytes), plan.taus,
                      Settings(context=plan.context, threads=plan.threads), out, log)


def failures(rows: list[dict]) -> list[str]:
    """One FAILED line per point whose file did not decode to its reconstruction."""
    return [f"FAILED lossy {r['model']} · {r['corpus']} tau {r['tau']}: round trip failed"
            for r in rows if not r["roundtrip_ok"]]


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})
    write_text(path, buf.getvalue())


def _cell(v):
    return f"{v:.6g}" if isinstance(v, float) and not math.isinf(v) else ("inf" if v == math.inf else v)


def save_reconstruction(out_dir: Path, model: str, corpus: str, tau: float, data: bytes) -> Path:
    """What the model rebuilt at the smallest non-zero tau, for a person to read."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}-{corpus}")
    path = out_dir / f"reconstruction-{safe}-tau{tau:g}.txt"
    write_bytes(path, data)
    return path
