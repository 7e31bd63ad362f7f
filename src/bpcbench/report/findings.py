"""A quantization ladder for people: ladder.md (tables and "What the numbers say").

Reads only a ladder document (ladder.json: `meta` and `rows`, see bpcbench.ladder.results),
so an old run reads the same with today's wording. Missing numbers are None.

ladder.md has one table row per level: file size, real bits per weight, bits/byte per corpus,
Δ against the base (with "(n.s.)" where the row's `delta_significant` says it is within
noise), KLD, top-token agreement, speed, memory and the Pareto mark; then the findings, short
statements generated from the numbers, and what each file really stores.

>>> doc = {"meta": {"base": {"label": "F16", "source": None}}, "rows": [
...     {"level": "base", "kind": "base", "corpus": "all", "n_tokens": 9, "file_bytes": 200e6, "file_mb": 200.0,
...      "bits_per_byte": 1.0, "pareto": True, "error": ""},
...     {"level": "Q8_0", "kind": "level", "corpus": "all", "n_tokens": 9, "file_bytes": 100e6, "file_mb": 100.0,
...      "bits_per_weight": 8.5, "kld_mean": 0.001, "bits_per_byte": 1.001, "delta_bits_per_byte": 0.001,
...      "delta_significant": False, "pareto": True, "tensors_fallback": 0, "error": ""}]}
>>> for line in findings(doc)[1:]:
...     print(line)
Pareto front, smallest file first (file MB, bits/byte): Q8_0 (100.0, 1.0010), base (200.0, 1.0000).
Lowest bits/byte among the levels: Q8_0, 1.0010 (+0.0010 vs the base).
Smallest level whose Δ bits/byte is within noise of the base: Q8_0 (100.0 MB, 50% of the base file).
"""

from __future__ import annotations

from bpcbench.ladder.scoring import POOLED
from bpcbench.stats import CI_PERCENT, Z_95
from bpcbench.bench.labels import is_missing


def pooled_rows(doc: dict) -> list[dict]:
    """One row per level (all corpora pooled), in ladder order: base first."""
    return [r for r in doc["rows"] if r["corpus"] == POOLED]


def scored(row: dict) -> bool:
    """Was the level evaluated? (A level that could not be made or loaded has no numbers.)"""
    return row.get("n_tokens") is not None


def _reexpansion(doc: dict, levels: list[dict]) -> str:
    base = doc["meta"]["base"]
    t = base["source_type"]
    text = (f"The base is {base['label']}: the {t} file widened to F16 by llama.cpp's quantizer "
            f"(allow_requantize). Its weights hold only {t} precision, so this ladder measures "
            f"requantization damage relative to a {t}-precision model, not quantization damage "
            f"relative to the model's original weights. Levels above {t} cannot be better than "
            f"the base, and a level whose grid does not contain the {t} values adds error even "
            f"at more bits per weight.")
    src = next((r for r in levels if r["kind"] == "source" and scored(r)), None)
    if src:
        text += (f" The {t} file itself against the re-expanded base (the same weight values up "
                 f"to F16 rounding, computed through different kernels): KLD {src['kld_mean']:.5f}, same top "
                 f"{src['top1_agreement_percent']:.2f}%, Δ {src['delta_bits_per_byte']:+.4f} bits/byte; KLDs of "
                 f"that size are the floor of this comparison, not weight damage.")
    return text


def _kld_order(ok: list[dict]) -> str:
    """KLD against bits per weight, and the levels another beats on both counts."""
    by_bpw = sorted(ok, key=lambda r: -r["bits_per_weight"])
    order = ", ".join(f"{r['level']} {r['bits_per_weight']:.2f}→{r['kld_mean']:.4f}" for r in by_bpw)
    beaten = []
    for r in by_bpw:
        better = [o for o in ok if o["bits_per_weight"] < r["bits_per_weight"] and o["kld_mean"] < r["kld_mean"]]
        if better:
            b = min(better, key=lambda o: o["bits_per_weight"])
            beaten.append(f"{r['level']} ({r['bits_per_weight']:.2f} bits/weight, KLD {r['kld_mean']:.4f}) by "
                          f"{b['level']} ({b['bits_per_weight']:.2f}, {b['kld_mean']:.4f})")
    if beaten:
        return (f"KLD against real bits per weight (bits/weight→KLD mean): {order}. Not monotonic; beaten on "
                f"both counts: {'; '.join(beaten)}.")
    return f"KLD mean rises as the real bits per weight fall (bits/weight→KLD mean): {order}."


def _fallbacks(ok: list[dict]) -> list[str]:
    fell = [r for r in ok if r.get("tensors_fallback")]
    if not fell:
        return []
    worst = max(r["tensors_fallback"] for r in fell)
    return [f"Levels are not what their names say: in {len(fell)} of {len(ok)} levels llama.cpp stored some "
            f"tensors in another type than its mix asked for, because their rows are not a multiple of the "
            f"type's block (256 for K-quants); up to {worst} of {fell[0]['tensors_total']} tensors. "
            + "; ".join(f"{r['level']}: {r['tensor_fallbacks']} ({r['bits_per_weight']:.2f} bits/weight)"
                        for r in fell if r.get("tensor_fallbacks")) + "."]


def _same_tensors(ok: list[dict]) -> list[str]:
    out, seen = [], {}
    for r in ok:
        h = r.get("tensor_data_sha256")
        if h and h in seen:
            out.append(f"{r['level']} stores exactly the same tensors as {seen[h]} (only the header differs).")
        elif h:
            seen[h] = r["level"]
    return out


def findings(doc: dict) -> list[str]:
    """Short statements generated from the numbers, for ladder.md."""
    levels = pooled_rows(doc)
    ok = [r for r in levels if scored(r) and r["kind"] == "level"]
    out = [_reexpansion(doc, levels)] if doc["meta"]["base"].get("source") else []
    if not ok:
        return out + ["No level could be evaluated."]
    out.append(_kld_order(ok))
    front = sorted((r for r in levels if scored(r) and r.get("pareto")), key=lambda r: r["file_bytes"])
    if front:
        out.append("Pareto front, smallest file first (file MB, bits/byte): " + ", ".join(
            f"{r['level']} ({r['file_mb']:.1f}, {r['bits_per_byte']:.4f})" for r in front) + ".")
    best = min(ok, key=lambda r: r["bits_per_byte"])
    out.append(f"Lowest bits/byte among the levels: {best['level']}, {best['bits_per_byte']:.4f} "
               f"({best['delta_bits_per_byte']:+.4f} vs the base).")
    noise = [r for r in ok if not r["delta_significant"]]
    if noise:
        smallest = min(noise, key=lambda r: r["file_bytes"])
        base_bytes = next(r["file_bytes"] for r in levels if r["kind"] == "base")
        out.append(f"Smallest level whose Δ bits/byte is within noise of the base: {smallest['level']} "
                   f"({smallest['file_mb']:.1f} MB, {100 * smallest['file_bytes'] / base_bytes:.0f}% "
                   "of the base file).")
    out += _fallbacks(ok) + _same_tensors(ok)
    out += [f"{r['level']}: {r['error']}" for r in levels if r.get("error")]
    return out


# -- ladder.md ----------------------------------------------------------------------------

NOTE = ("Δ bits/byte is against the base on the same tokens; (n.s.) marks a difference inside its "
        f"{CI_PERCENT} interval ({Z_95:.2f} standard errors of the per-token paired differences; tokens treated as "
        "independent, as llama-perplexity does, so the interval is optimistic). KLD is KL(base ‖ level) in nats "
        "per token (llama-perplexity's definition, every token scored); same top % is its \"Same top p\". "
        "tok/s is the level's own llama_decode time; peak RSS is the ladder process while that level "
        "ran (base and level loaded). ◆ marks the Pareto front of file size against bits/byte.")
MIX_NOTE = ("Δ bits/byte with {mix} mixed in (the ladder's `mix`): the level's ideal bits/byte with it mixed in "
            "(codec/mixing.py, as `--mix {mix}` codes) minus the level's alone, on the same logits and tokens.")


def _mix(meta: dict) -> str:
    """What the ladder also scored mixed in (LadderConfig.mix); a document from before the key mixed nothing."""
    return meta["config"].get("mix") or "none"


def _num(v, fmt: str) -> str:
    return "" if is_missing(v) else format(v, fmt)


def _evaluation(meta: dict) -> str:
    """How both models saw the texts (meta["evaluation"]); a document from before the lanes
    policy (no such entry) read its texts in chunks of `chunk_tokens`."""
    ev = meta.get("evaluation")
    if ev is None:
        return f"Chunks of ≤{meta['config']['chunk_tokens']} tokens, prefill evaluation"
    if ev["policy"] == "chunks":
        how = (f"Disjoint chunks of ≤{ev['context']:,} tokens, each from BOS ({ev['lanes']:,} in all), "
               f"as the codec's ideal path evaluates the chunks policy")
    else:
        how = (f"One lane over each text, a KV window of {ev['context']:,} tokens (BOS included) that drops "
               f"the {ev['discard']:,} oldest after BOS when full, as the codec's ideal path evaluates the "
               f"lanes policy")
    if ev.get("context_mean") is not None:
        how += (f"; {ev['context_mean']:,.1f} tokens of history per scored token on average "
                f"({ev['context_min']:,}–{ev['context_max']:,})")
    return how + "; prefill evaluation"


def _intro(meta: dict) -> list[str]:
    base, cfg = meta["base"], meta["config"]
    texts = meta["texts"]
    total = sum(t["bytes"] for t in texts)
    described = ", ".join(f"{t['name']} ({t['bytes']:,} bytes, {t['tokens']:,} tokens)" for t in texts)
    return [f"# Quantization ladder: {base['name']}", "",
            f"Base: **{base['label']}** ({base['report']['file_mb']:.1f} MB, "
            f"{base['report']['bits_per_weight']:.2f} bits/weight). Text: {described}; {total:,} bytes in all. "
            f"{_evaluation(meta)}, {cfg['threads']} llama.cpp thread(s) "
            f"per model with base and level decoding concurrently, llama-cpp-python {meta['llama_cpp_python']}, "
            f"{meta['date_utc']}.", ""]


def _head(names: list[str], coded_bytes: int, mix: str) -> list[str]:
    head = (["level", "file MB", "bits/weight", "tensors as asked / fell back / total"]
            + [f"bits/byte {n}" for n in names]
            + (["bits/byte all"] if len(names) > 1 else [])
            + ["Δ bits/byte"] + ([f"Δ bits/byte with {mix} mixed in"] if mix != "none" else [])
            + ["KLD mean", "KLD median", "KLD p99", "same top %", "tok/s", "peak RSS MiB", "Pareto"])
    if coded_bytes:
        head.insert(-1, f"coded check ({coded_bytes} B)")
    return head


def _tensors(a: dict) -> str:
    if a.get("tensors_requested_type") is not None:
        return f"{a['tensors_requested_type']} / {a['tensors_fallback']} / {a['tensors_total']}"
    return f"– / – / {a['tensors_total']}" if a.get("tensors_total") is not None else ""


def _row(a: dict, per_corpus: dict, names: list[str], base_label: str, coded_bytes: int, mix: str) -> list[str]:
    """The cells of one evaluated level; the base's divergence columns are 0 by definition."""
    is_base = a["kind"] == "base"
    cells = [f"{a['level']} ({base_label})" if is_base else a["level"],
             f"{a['file_mb']:.1f}", f"{a['bits_per_weight']:.2f}", _tensors(a)]
    cells += [_num(per_corpus[n].get("bits_per_byte"), ".4f") for n in names]
    if len(names) > 1:
        cells.append(f"{a['bits_per_byte']:.4f}")
    delta = "" if is_base else f"{a['delta_bits_per_byte']:+.4f}" + ("" if a["delta_significant"] else " (n.s.)")
    cells += [delta] + ([_num(a.get("mix_delta_bits_per_byte"), "+.4f")] if mix != "none" else [])
    cells += ["0" if is_base else f"{a['kld_mean']:.5f}",
              "0" if is_base else f"{a['kld_median']:.5f}",
              "0" if is_base else f"{a['kld_p99']:.4f}",
              "100" if is_base else f"{a['top1_agreement_percent']:.2f}",
              _num(a.get("tokens_per_second"), ".0f"),
              "" if is_base else _num(a.get("peak_rss_mb"), ".0f")]
    if coded_bytes:
        ok = a.get("coded_check") == "ok"
        cells.append((a.get("coded_check") or "") + (f" {a['coded_bits_per_byte']:.3f}" if ok else ""))
    cells.append("◆" if a.get("pareto") else "")
    if a.get("error"):
        cells[0] += f" ⚠ {a['error']}"
    return cells


def _failed_row(a: dict, width: int) -> list[str]:
    cells = [f"{a['level']} ⚠ error: {a['error']}", _num(a.get("file_mb"), ".1f"),
             _num(a.get("bits_per_weight"), ".2f")]
    return cells + [""] * (width - len(cells))


def _table(doc: dict) -> list[str]:
    meta = doc["meta"]
    names = [t["name"] for t in meta["texts"]]
    coded_bytes = meta["config"].get("coded_bytes") or 0
    mix = _mix(meta)
    head = _head(names, coded_bytes, mix)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for a in pooled_rows(doc):
        if scored(a):
            per_corpus = {r["corpus"]: r for r in doc["rows"] if r["level"] == a["level"]}
            cells = _row(a, per_corpus, names, meta["base"]["label"], coded_bytes, mix)
        else:
            cells = _failed_row(a, len(head))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _tensor_types(doc: dict) -> list[str]:
    lines = ["## Tensor types", "",
             "What each file really stores (from its GGUF header), and the tensors llama.cpp's quantizer gave "
             "another type than the level's mix asked for (from its log).", "",
             "| level | bits/weight | tensor types | fell back (asked→given) |", "|---|---:|---|---|"]
    for r in pooled_rows(doc):
        if r.get("file_bytes") is None:
            continue
        fell = r.get("tensor_fallbacks") or ("0" if r.get("tensors_fallback") == 0 else "")
        lines.append(f"| {r['level']} | {r['bits_per_weight']:.2f} | {r['tensor_types']} | {fell} |")
    return lines


def ladder_markdown(doc: dict) -> str:
    """ladder.md from a ladder document ({"meta": ..., "rows": ...}, as ladder.json holds it)."""
    mix = _mix(doc["meta"])
    note = NOTE + ("" if mix == "none" else " " + MIX_NOTE.format(mix=mix))
    lines = _intro(doc["meta"]) + _table(doc) + ["", note, ""]
    lines += ["## What the numbers say", ""] + [f"- {p}" for p in findings(doc)] + [""]
    return "\n".join(lines + _tensor_types(doc) + [""])
