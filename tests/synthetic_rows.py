"""results.csv rows made up for the report, compare and plot tests (no model needed)."""

from __future__ import annotations

from bpcbench.bench import results

MODEL_BYTES = 100_000_000
N = 20_000  # bytes measured per corpus


def row(codec: str, measure: str = "baseline", size: int | None = None, corpus: str = "alice29", **kw) -> dict:
    """One row through results.finish_row, like the runner's; `kw` sets (or overrides) any column."""
    r = {
        "run_id": "20260101T000000Z-test", "timestamp_utc": "2026-01-01T00:00:00+00:00", "host": "h",
        "cached": False, "codec": codec, "measure": measure, "corpus_name": corpus, "corpus_kind": "english",
        "corpus_sha256": "0" * 64, "input_sha256": "1" * 64, "corpus_file_bytes": 152089, "corpus_bytes": N,
        "corpus_characters": N, "max_bytes": N, "encode_seconds": 0.5, "decode_seconds": 0.25,
        "peak_rss_mb": 50.0, "roundtrip_ok": True,
    }
    if measure == "baseline":
        r.update(coded_bytes=size, container_bytes=size)
    else:
        r.update(model_name=codec.removeprefix("llm:"), model_file_bytes=MODEL_BYTES, model_sha256="2" * 64,
                 model_quant_type="Q4_1", model_n_params=135_000_000, policy="lanes", context_tokens=512,
                 n_tokens=5000, n_pieces=10, encode_seconds=30.0, decode_seconds=31.0, threads=2)
        bits = size * 8 * 0.99
        r.update(ideal_bits=bits, _ci_ideal=(bits / N * 0.95, bits / N * 1.05))
        if measure == "coded":
            r.update(coded_bytes=size - 100, container_bytes=size)
        else:
            r.update(roundtrip_ok=None, decode_seconds=None)
    r.update(kw)
    return results.finish_row(r)
