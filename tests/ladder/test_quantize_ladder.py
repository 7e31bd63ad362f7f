"""Quantization ladder: llama.cpp's quantizer, per-level inspection, KL divergence against a base."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import struct
from pathlib import Path

import entropy_reference
import numpy as np
import pytest
from scipy.special import log_softmax

pytest.importorskip("llama_cpp")

from bpcbench import corpora, defaults, models, quantize, stats
from bpcbench.defaults import LADDER_CONFIG
from bpcbench.cli import main
from bpcbench.codec.cross_entropy import cross_entropy, ideal_plan
from bpcbench.codec.session import DEFAULT_CONTEXT_CAP, Session, Settings
from bpcbench.errors import BpcError
from bpcbench.ladder import config, results, scoring
from bpcbench.ladder.config import LadderConfig
from bpcbench.ladder.run import LadderResult, run_ladder
from bpcbench.levels import prepare_base
from bpcbench.report.ladder import write_report
from bpcbench.llama.binding import Model
from bpcbench.report.findings import ladder_markdown

LEVELS = ("Q8_0", "Q4_K_M", "Q2_K")
NAMESAKE_TYPE = {"Q8_0": "Q8_0", "Q4_K_M": "Q4_K", "Q2_K": "Q2_K"}  # the tensor type each level is named after
USER_CACHE = defaults.cache_root()  # the real model's test reuses the user's cache (re-expanded F16, levels)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache (quantized files and sha256s), so tests never touch ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BPCBENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def quantized(tiny_model_path, cache):
    return {lvl: quantize.quantize(tiny_model_path, lvl) for lvl in LEVELS}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "story.txt"
    path.write_bytes(
        b"The rabbit ran across the field and into the hedge, where it waited for the fox to pass. "
        b"When the fox had gone, the rabbit came out again and went home to its burrow by the river.\n" * 6
    )
    return path


@pytest.fixture(scope="module")
def ladder_result(tiny_model_path, cache):
    cfg = LadderConfig(base=str(tiny_model_path), levels=list(LEVELS), corpora=["alice29"],
                       max_bytes=1200, coded_bytes=160)
    return run_ladder(cfg)


def _by_level(result):
    return {r.level: r for r in result.levels}


# -- quantizing ---------------------------------------------------------------------------


def test_levels_get_their_types_and_bits_per_weight_fall(quantized):
    for lvl, rep in quantized.items():
        assert Path(rep.path).is_file() and rep.level == lvl
        assert rep.tensors_total == 21  # 16 matrices + 5 norm vectors
        assert rep.tensors_fallback == 0  # every tiny row length is a multiple of 256
        assert rep.tensors_requested_type == rep.tensors_converted == 16
        assert rep.tensor_types["F32"] == 5
        assert rep.tensor_types.get(NAMESAKE_TYPE[lvl], 0) > 0
        total_bytes, n_elem, types, n, _ = quantize.inspect_gguf(rep.path)
        assert rep.bits_per_weight == pytest.approx(total_bytes * 8 / n_elem)
        assert types == rep.tensor_types and n == 21
    assert quantized["Q8_0"].tensor_types == {"Q8_0": 16, "F32": 5}
    bpw = [quantized[lvl].bits_per_weight for lvl in LEVELS]
    assert bpw == sorted(bpw, reverse=True) and bpw[-1] < 4 < bpw[0]


def test_quantized_files_are_cached_by_source_hash_and_version(tiny_model_path, quantized, cache):
    rep = quantize.quantize(tiny_model_path, "q8_0")  # names are case-insensitive
    assert rep.cached and rep.path == quantized["Q8_0"].path
    sha = models.sha256_file(tiny_model_path)
    import llama_cpp

    assert Path(rep.path) == cache / "quantized" / sha[:16] / f"Q8_0-{llama_cpp.__version__}.gguf"
    assert Path(rep.path).with_suffix(".json").is_file()
    assert not list(Path(rep.path).parent.glob("*.tmp"))


def test_a_level_the_model_cannot_take_is_an_error_not_a_substitute(tiny_model_path, cache):
    with pytest.raises(BpcError) as e:
        quantize.quantize(tiny_model_path, "IQ2_XXS")  # needs an importance matrix
    msg = str(e.value)
    assert "\n" not in msg and "IQ2_XXS" in msg and "imatrix" in msg
    sha = models.sha256_file(tiny_model_path)
    assert not list((cache / "quantized" / sha[:16]).glob("IQ2_XXS*"))
    assert not list((cache / "quantized" / sha[:16]).glob(".*tmp"))


def test_unknown_level_lists_the_valid_ones():
    with pytest.raises(BpcError) as e:
        quantize.parse_levels("Q8_0,Q9_K")
    msg = str(e.value)
    assert msg.startswith("unknown quantization level 'Q9_K'; valid levels: ")
    assert "Q4_K_M" in msg and "F16" in msg and "\n" not in msg
    assert quantize.parse_levels(" q8_0 , Q2_K,Q8_0") == ["Q8_0", "Q2_K"]


def test_corrupt_and_non_gguf_bases_fail_in_one_line(tiny_model_path, tmp_path, cache):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_model_path.read_bytes()[:5000])
    with pytest.raises(BpcError) as e:
        quantize.quantize(truncated, "Q8_0")
    assert str(e.value).startswith(f"model {truncated} is truncated or corrupt") and "\n" not in str(e.value)

    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model\n")
    with pytest.raises(BpcError, match=r"^not a GGUF file: .*notes\.gguf$"):
        run_ladder(LadderConfig(base=str(text), levels=["Q8_0"]))
    with pytest.raises(BpcError, match=r"^model not found: .*missing\.gguf"):
        quantize.quantize(tmp_path / "missing.gguf", "Q8_0")


def test_quantized_base_needs_reexpand(quantized, text_file):
    base = quantized["Q8_0"].path
    with pytest.raises(BpcError, match=r"is Q8_0, not F16/BF16/F32: .*pass --reexpand"):
        prepare_base(base)
    b = prepare_base(base, reexpand=True)
    assert b.label == "F16 re-expanded from Q8_0" and b.reexpanded
    assert b.report.tensor_types == {"F16": 16, "F32": 5}
    result = run_ladder(LadderConfig(base=base, reexpand=True, levels=["Q4_K_M"],
                                     corpora=[str(text_file)], max_bytes=400))
    assert [r.level for r in result.levels] == ["base", "Q8_0 (source)", "Q4_K_M"]
    src = _by_level(result)["Q8_0 (source)"].summary["all"]
    assert src["kld_mean"] < _by_level(result)["Q4_K_M"].summary["all"]["kld_mean"]
    assert "re-expanded from Q8_0" in ladder_markdown(results.document(result))


# -- importance matrices ------------------------------------------------------------------


def _weights(path):
    from gguf import GGUFReader

    return [(t.name, int(t.shape[0])) for t in GGUFReader(str(path)).tensors if len(t.shape) == 2]


def test_imatrix_gguf_and_legacy_formats(tiny_model_path, tmp_path, cache):
    import gguf

    weights = _weights(tiny_model_path)
    gpath = tmp_path / "imatrix.gguf"
    w = gguf.GGUFWriter(str(gpath), "imatrix")
    w.add_string("general.type", "imatrix")
    for name, ncols in weights:
        w.add_tensor(f"{name}.in_sum2", np.full(ncols, 8.0, dtype=np.float32))
        w.add_tensor(f"{name}.counts", np.array([4.0], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    loaded = quantize.load_imatrix(gpath)
    assert set(loaded) == {n for n, _ in weights}
    assert all(np.all(v == 2.0) for v in loaded.values())

    legacy = bytearray(struct.pack("<i", len(weights)))
    for name, ncols in weights:
        legacy += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 3, ncols)
        legacy += np.full(ncols, 6.0, dtype="<f4").tobytes()
    lpath = tmp_path / "imatrix.dat"
    lpath.write_bytes(bytes(legacy))
    assert all(np.all(v == 2.0) for v in quantize.load_imatrix(lpath).values())

    rep = quantize.quantize(tiny_model_path, "Q4_K_M", imatrix=gpath)
    assert rep.imatrix == models.sha256_file(gpath) and "imatrix-" in Path(rep.path).name
    with Model(rep.path) as m:
        assert m.n_vocab == 512

    (tmp_path / "bad.dat").write_bytes(b"\x05\x00\x00\x00abc")
    with pytest.raises(BpcError, match="importance matrix"):
        quantize.load_imatrix(tmp_path / "bad.dat")


# -- comparing ----------------------------------------------------------------------------


def test_block_scores_match_the_direct_formulas():
    rng = np.random.default_rng(0)
    lb = (rng.standard_normal((37, 300)) * 3).astype(np.float32)
    lq = (lb + rng.standard_normal(lb.shape) * 0.2).astype(np.float32)
    symbols = rng.integers(0, 300, 37)
    symbols[[3, 20]] = [300, 302]  # escapes: bytes no token spells
    bits_b, bits_q, kld, same = scoring.block_scores(lb, lq, symbols, n_escapes=3)

    lpb, lpq = (log_softmax(x.astype(np.float64), axis=1) for x in (lb, lq))
    for lp, bits in ((lpb, bits_b), (lpq, bits_q)):
        ref = entropy_reference.ideal_bits(entropy_reference.weights(lp, 3), symbols)
        np.testing.assert_allclose(bits, ref, rtol=1e-6)  # the kernel's float tolerance (codec/kernel.py)
    # KLD: its weights' ~1e-7 relative errors leave ~1e-8 nats (measured 1.4e-8 here): allowed 1e-7
    np.testing.assert_allclose(kld, (np.exp(lpb) * (lpb - lpq)).sum(axis=1), rtol=1e-6, atol=1e-7)
    assert np.array_equal(same, lb.argmax(1) == lq.argmax(1))

    _, _, k0, s0 = scoring.block_scores(lb, lb.copy(), symbols, n_escapes=3)
    assert np.all(k0 == 0.0) and s0.all()


@pytest.mark.parametrize("policy", ["lanes", "chunks"])
@pytest.mark.parametrize("concurrent", [False, True])
def test_a_model_against_itself_has_zero_kld_and_full_agreement(tiny_model_path, concurrent, policy):
    from concurrent.futures import ThreadPoolExecutor

    data = b"the quick brown fox jumps over the lazy dog. " * 30
    with Session(str(tiny_model_path)) as a, Model(tiny_model_path) as b:
        settings = Settings(policy=policy, context=200, threads=1).resolved(a.model)
        tok = a.vocab.tokenize(data)
        text = scoring.Text("t", "", data, tok, ideal_plan(len(tok.tokens), settings))
        with scoring.Evaluator(a.model, settings) as ea, scoring.Evaluator(b, settings) as eb:
            with ThreadPoolExecutor(max_workers=1) as pool:
                s = scoring.score_side_by_side(ea, eb, text, a.vocab, pool=pool if concurrent else None)
    assert s.n_tokens == len(tok.tokens) > 200  # more than one chunk; the lane slides
    segments = 1 if policy == "lanes" else -(-s.n_tokens // 200)  # as many chunks as needed, balanced
    longest = 200 if policy == "lanes" else -(-s.n_tokens // segments)
    assert len(text.plan.lengths) == segments and scoring.history([text])["context_max"] == longest
    assert np.all(s.kld == 0.0) and s.same_top.all()
    assert np.array_equal(s.bits, s.bits_base)
    summary = scoring.summarise([s])
    assert summary["kld_mean"] == summary["kld_median"] == summary["kld_p99"] == 0.0
    assert summary["top1_agreement_percent"] == 100.0 and summary["delta_bits_per_byte"] == 0.0


def test_summary_statistics_follow_llama_perplexity():
    kld = np.arange(1.0, 21.0)  # 20 values: even count, median is the mean of the middle two
    s = scoring.Scores(40, np.zeros(20), np.ones(20), kld, np.array([True] * 15 + [False] * 5))
    out = scoring.summarise([s])
    assert out["kld_median"] == 10.5
    assert out["kld_p99"] == pytest.approx(1 + 0.99 * 19)  # linear at fraction·(n−1)
    assert out["kld_mean_uncertainty"] == pytest.approx(math.sqrt((np.mean(kld**2) - 10.5**2) / 19))
    assert out["top1_agreement_percent"] == 75.0
    assert out["top1_agreement_uncertainty_percent"] == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 19))
    assert out["bits_per_byte"] == 0.5 and out["delta_bits_per_byte"] == 0.5


def test_delta_is_significant_outside_its_95_percent_interval():
    # 12 paired differences of mean m and standard deviation 1: uncertainty 1/sqrt(11) per token
    for ratio, expected in ((1.98, True), (1.95, False), (0.0, False)):
        m = ratio / math.sqrt(11)
        diff = m + np.array([1.0, -1.0] * 6)
        s = scoring.Scores(12, np.zeros(12), diff, np.zeros(12), np.ones(12, dtype=bool))
        out = scoring.summarise([s])
        assert out["delta_bits_per_byte"] == pytest.approx(m)
        assert out["delta_bits_per_byte_uncertainty"] == pytest.approx(1 / math.sqrt(11))
        assert out["delta_significant"] is expected  # 1.98 standard errors: outside Z_95, inside 2
        assert expected == stats.significant(out["delta_bits_per_byte"],
                                             stats.Z_95 * out["delta_bits_per_byte_uncertainty"])


# -- the ladder ---------------------------------------------------------------------------


def test_ladder_kld_rises_from_q8_0_to_q2_k(ladder_result):
    lv = _by_level(ladder_result)
    assert [r.level for r in ladder_result.levels] == ["base", *LEVELS]
    kld = [lv[x].summary["all"]["kld_mean"] for x in LEVELS]
    top = [lv[x].summary["all"]["top1_agreement_percent"] for x in LEVELS]
    assert 0 < kld[0] < kld[1] < kld[2]
    assert top[0] > top[2]
    assert lv["base"].summary["all"]["kld_mean"] == 0 and lv["base"].summary["all"]["delta_bits_per_byte"] == 0
    for x in LEVELS:
        assert lv[x].coded_check == "ok" and not lv[x].error
        s = lv[x].summary["all"]
        base_bpb = lv["base"].summary["all"]["bits_per_byte"]
        assert s["delta_bits_per_byte"] == pytest.approx(s["bits_per_byte"] - base_bpb)
        assert s["tokens_per_second"] > 0 and lv[x].peak_rss_mb > 0


def _base_bits_and_cross_entropy(result: LadderResult, data: bytes, model_path) -> tuple[dict, object]:
    """The base's pooled summary and `cross_entropy` of the same bytes under the ladder's settings."""
    with Session(str(model_path)) as session:
        measured = cross_entropy(data, session, result.config.settings())
    return _by_level(result)["base"].summary["all"], measured


def test_base_bits_are_the_cross_entropy_of_the_codec(ladder_result, tiny_model_path):
    data = corpora.take_prefix(corpora.resolve("alice29").read_bytes(), 1200)
    base, measured = _base_bits_and_cross_entropy(ladder_result, data, tiny_model_path)
    assert base["n_tokens"] == measured.n_tokens
    assert base["base_bits_per_byte"] * base["input_bytes"] == pytest.approx(measured.ideal_bits, rel=1e-9)
    assert base["bits_per_byte"] == pytest.approx(measured.ideal_bits_per_byte, rel=1e-9)
    assert (measured.policy, measured.context) == ("lanes", DEFAULT_CONTEXT_CAP)


@pytest.mark.parametrize("policy, context, discard", [("lanes", 48, 20), ("lanes", 64, None), ("chunks", 100, None)])
def test_base_bits_equal_the_ideal_path_under_every_policy(tiny_model_path, cache, text_file, policy, context,
                                                           discard):
    """Windows that slide (or chunks) many times: the same stream evaluation as cross_entropy, bit for bit."""
    cfg = LadderConfig(base=str(tiny_model_path), levels=["Q8_0"], corpora=[str(text_file)], threads=1,
                       policy=policy, context=context, discard=discard)
    result = run_ladder(cfg)
    base, measured = _base_bits_and_cross_entropy(result, text_file.read_bytes(), tiny_model_path)
    assert base["n_tokens"] == measured.n_tokens > 3 * context
    assert base["base_bits_per_byte"] * base["input_bytes"] == pytest.approx(measured.ideal_bits, rel=1e-9)
    ev = result.meta["evaluation"]
    assert (ev["policy"], ev["context"]) == (policy, context) == (measured.policy, measured.context)
    assert ev["discard"] == ((discard or context // 4) if policy == "lanes" else None)
    assert base["context_mean"] == ev["context_mean"] == pytest.approx(measured.context_mean, rel=1e-12)
    longest = context if policy == "lanes" else -(-measured.n_tokens // measured.lanes)  # balanced chunks
    assert (base["context_min"], base["context_max"]) == (1, longest) == (measured.context_min, measured.context_max)
    assert base["lanes"] == measured.lanes == (1 if policy == "lanes" else -(-measured.n_tokens // context))
    assert _by_level(result)["Q8_0"].summary["all"]["kld_mean"] > 0


def test_outputs_csv_md_png(ladder_result, tmp_path):
    paths = results.write_outputs(ladder_result, tmp_path / "run")
    paths.update(write_report(results.document(ladder_result), tmp_path / "run"))
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["level"] for r in rows] == ["base", "base", "Q8_0", "Q8_0", "Q4_K_M", "Q4_K_M", "Q2_K", "Q2_K"]
    assert {r["corpus"] for r in rows} == {"alice29", "all"}
    for col in ("level", "base_label", "file_bytes", "file_mb", "bits_per_weight", "tensors_requested_type",
                "tensors_total", "bits_per_byte", "delta_bits_per_byte", "kld_mean", "kld_median", "kld_p99",
                "top1_agreement_percent", "tokens_per_second", "peak_rss_mb", "error"):
        assert col in rows[0]
    for col in ("kind", "delta_significant", "tensor_fallbacks", "delta_bits_per_byte_uncertainty"):
        assert col in rows[0]
    assert [r["kind"] for r in rows[:4]] == ["base", "base", "level", "level"]
    assert list(rows[0]) == [c.name for c in results.COLUMNS]
    q2 = next(r for r in rows if r["level"] == "Q2_K" and r["corpus"] == "all")
    assert q2["base_label"] == "F32" and int(q2["tensors_requested_type"]) == 16 and q2["error"] == ""
    assert float(q2["kld_mean"]) > 0 and 0 < float(q2["top1_agreement_percent"]) < 100
    md = paths["md"].read_text()
    assert "| Q2_K | " in md and "Base: **F32**" in md and "## What the numbers say" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"rows"' in paths["json"].read_text()
    # the report is rendered from ladder.json alone: the same document gives the same ladder.md
    doc = json.loads(paths["json"].read_text())
    assert ladder_markdown(doc) == md
    assert len(doc["rows"]) == len(rows) and doc["meta"]["config"]["policy"] == "lanes"
    # the tiny model's training context (4096) is capped at 2048; discard a quarter of it
    assert doc["meta"]["config"]["context"] is None and doc["meta"]["settings"]["context"] == DEFAULT_CONTEXT_CAP
    ev = doc["meta"]["evaluation"]
    assert (ev["policy"], ev["context"], ev["discard"]) == ("lanes", DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP // 4)
    n = rows[0]["n_tokens"]
    assert ev["lanes"] == 1 and (ev["context_min"], ev["context_max"]) == (1, int(n))  # no slide: n < 2048
    assert ev["context_mean"] == pytest.approx((int(n) + 1) / 2)
    for r in rows:
        assert (r["policy"], r["context_tokens"], r["discard_tokens"]) == ("lanes", "2048", "512")
        assert (r["lanes"], r["context_min"], r["context_max"]) == ("1", "1", n)
        assert float(r["context_mean"]) == pytest.approx(ev["context_mean"])
    assert ("One lane over each text, a KV window of 2,048 tokens (BOS included) that drops the 512 oldest "
            "after BOS when full") in md
    assert f"{ev['context_mean']:,.1f} tokens of history per scored token on average (1–{int(n):,})" in md
    assert "Chunks of ≤" not in md


def test_the_mix_column_is_empty_unless_asked(ladder_result):
    assert all("mix_delta_bits_per_byte" not in s for r in ladder_result.levels for s in r.summary.values())
    rows = list(csv.DictReader(io.StringIO(results.to_csv(results.rows(ladder_result)))))
    assert rows and all(r["mix_delta_bits_per_byte"] == "" for r in rows)
    assert "mixed in" not in ladder_markdown(results.document(ladder_result))


def _ideal_bits(model_path, data: bytes, settings: Settings, mix: str) -> float:
    with Session(str(model_path)) as session:
        return cross_entropy(data, session, dataclasses.replace(settings, mix=mix)).ideal_bits


@pytest.mark.parametrize("policy, context", [("lanes", None), ("chunks", 100)])
def test_the_mix_column_is_the_mixed_minus_plain_ideal_bits(tiny_model_path, cache, text_file, policy, context):
    """With mix = "match", every level's (and the base's) gain from mixing, from the ladder's own logits, is
    what cross_entropy gives with --mix match minus without, on that level's file: per text and pooled."""
    cfg = LadderConfig(base=str(tiny_model_path), levels=["Q8_0", "Q2_K"], corpora=[str(text_file), "alice29"],
                       max_bytes=900, threads=1, policy=policy, context=context, mix="match")
    result = run_ladder(cfg)
    texts = [corpora.take_prefix(text_file.read_bytes(), 900),
             corpora.take_prefix(corpora.resolve("alice29").read_bytes(), 900)]
    lv = _by_level(result)
    settings = cfg.settings()
    for level, path in (("base", tiny_model_path), ("Q8_0", lv["Q8_0"].report.path),
                        ("Q2_K", lv["Q2_K"].report.path)):
        summary = lv[level].summary
        gains = [_ideal_bits(path, d, settings, "match") - _ideal_bits(path, d, settings, "none") for d in texts]
        for name, data, gain in zip((text_file.name, "alice29"), texts, gains):
            assert summary[name]["mix_delta_bits_per_byte"] * len(data) == pytest.approx(gain, rel=1e-9, abs=1e-9)
        pooled = summary["all"]["mix_delta_bits_per_byte"]
        assert pooled * sum(map(len, texts)) == pytest.approx(sum(gains), rel=1e-9, abs=1e-9)
    # the repeated story is where a match model pays: its gain is real, and the plain numbers are the plain ones
    assert lv["base"].summary[text_file.name]["mix_delta_bits_per_byte"] < -0.01
    plain = run_ladder(dataclasses.replace(cfg, mix="none", levels=["Q8_0"]))
    assert _by_level(plain)["Q8_0"].summary["all"]["bits_per_byte"] == lv["Q8_0"].summary["all"]["bits_per_byte"]
    rows = list(csv.DictReader(io.StringIO(results.to_csv(results.rows(result)))))
    assert all(r["mix_delta_bits_per_byte"] != "" for r in rows)
    md = ladder_markdown(results.document(result))
    assert "Δ bits/byte with match mixed in" in md
    assert f"{lv['Q2_K'].summary['all']['mix_delta_bits_per_byte']:+.4f}" in md


def test_error_level_becomes_a_row(tiny_model_path, cache, text_file, tmp_path):
    cfg = LadderConfig(base=str(tiny_model_path), levels=["IQ2_XXS", "Q8_0"],
                              corpora=[str(text_file)], max_bytes=300)
    result = run_ladder(cfg)
    lv = _by_level(result)
    assert "requires an imatrix" in lv["IQ2_XXS"].error and not lv["IQ2_XXS"].summary
    assert lv["Q8_0"].summary["all"]["kld_mean"] > 0
    text = results.to_csv(results.rows(result))
    assert "IQ2_XXS,level,all,F32" in text and "requires an imatrix" in text
    assert "IQ2_XXS ⚠ error" in ladder_markdown(results.document(result))


def test_cli_ladder(tiny_model_path, cache, text_file, tmp_path, capsys):
    out = tmp_path / "cli-run"
    rc = main(["ladder", str(tiny_model_path), "--levels", "Q8_0", "--corpora", str(text_file),
               "--max-bytes", "300", "--out", str(out), "-q"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"ladder.csv", "ladder.md", "ladder.png", "ladder.json"}
    assert "| Q8_0 |" in capsys.readouterr().out

    for flags, expected, described in (
            (["--policy", "chunks", "-c", "32"], ("chunks", 32, None),
             "Disjoint chunks of ≤32 tokens, each from BOS"),
            (["--context", "32", "--discard", "8"], ("lanes", 32, 8), "a KV window of 32 tokens (BOS included) "
                                                                      "that drops the 8 oldest after BOS")):
        run = tmp_path / f"cli-{expected[0]}"
        assert main(["ladder", str(tiny_model_path), "--levels", "Q8_0", "--corpora", str(text_file),
                     "--max-bytes", "300", "--out", str(run), "-q", *flags]) == 0
        ev = json.loads((run / "ladder.json").read_text())["meta"]["evaluation"]
        assert (ev["policy"], ev["context"], ev["discard"]) == expected and ev["context_max"] == 32
        assert described in (run / "ladder.md").read_text()
    capsys.readouterr()
    assert main(["ladder", str(tiny_model_path), "--policy", "chunks", "--discard", "8", "-q"]) == 2
    assert "discard applies to the lanes policy only" in capsys.readouterr().err

    assert main(["ladder", str(tiny_model_path), "--levels", "Q9_K", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bpcbench: error: unknown quantization level 'Q9_K'; valid levels: ") and "\n" not in err

    cfg = tmp_path / "ladder.toml"
    cfg.write_text(f'[ladder]\nbase = "{tiny_model_path}"\nlevels = ["Q8_0"]\ncorpora = ["{text_file}"]\n'
                   f'max_bytes = 200\n')
    assert main(["ladder", "--config", str(cfg), "--out", str(tmp_path / "cfg-run"), "-q"]) == 0
    cfg.write_text("[ladder]\nbase = 'x'\nlevel = ['Q8_0']\n")
    assert main(["ladder", "--config", str(cfg), "-q"]) == 2
    assert "unknown key 'level'" in capsys.readouterr().err


def test_prefixes_end_on_a_utf8_boundary(tiny_model_path, cache, tmp_path):
    text = tmp_path / "accents.txt"
    text.write_bytes("é".encode() * 200)  # two bytes a character
    result = run_ladder(LadderConfig(base=str(tiny_model_path), levels=["Q8_0"], corpora=[str(text)],
                                     max_bytes=301))
    (meta,) = result.texts
    assert meta["bytes"] == 300 and meta["name"] == "accents.txt"
    assert _by_level(result)["base"].summary["accents.txt"]["input_bytes"] == 300


def test_config_options_win_over_the_toml_table(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[ladder]\nbase = "a.gguf"\nlevels = ["Q8_0", "Q2_K"]\ncorpora = "alice29,lcet10"\n'
                    'max_bytes = 100\nthreads = 1\nout = "there"\n')
    cfg, out = config.merged(path, {"base": None, "levels": "q4_k_m", "max_bytes": 200, "out": None})
    assert (cfg.base, cfg.levels, cfg.corpora, cfg.max_bytes, cfg.threads) == (
        "a.gguf", ["Q4_K_M"], ["alice29", "lcet10"], 200, 1)
    assert out == Path("there") and (cfg.policy, cfg.context, cfg.discard) == ("lanes", None, None)
    assert cfg.settings() == Settings(policy="lanes", context=None, discard=None, threads=1)

    shipped, out = config.merged(None, {"base": None, "context": 64, "policy": "chunks"})
    assert shipped.base == "smollm2-135m" and shipped.reexpand and (shipped.policy, shipped.context) == ("chunks", 64)
    assert shipped.settings() == Settings(policy="chunks", context=64, threads=shipped.threads)
    assert out.parent == Path("results") and out.name.endswith("Z-ladder")  # defaults.run_dir
    own, _ = config.merged(None, {"base": "b.gguf"})  # a base given: the shipped table is not read
    assert not own.reexpand and own.levels == list(quantize.DEFAULT_LEVELS) and own.corpora == ["alice29"]
    assert config.merged("ladder", {})[0].base == "smollm2-135m"  # a shipped config by name

    path.write_text('[ladder]\nbase = "a.gguf"\nmax_bytes = "many"\n')
    with pytest.raises(BpcError, match=r"max_bytes must be a non-negative integer.*'many'"):
        config.merged(path, {})
    with pytest.raises(BpcError, match=r"^ladder: context must be >= 1, got 0$"):
        config.merged(None, {"base": "b.gguf", "context": 0})
    with pytest.raises(BpcError, match=r"^ladder: threads must be a positive integer, got True$"):
        config.merged(None, {"base": "b.gguf", "threads": True})
    with pytest.raises(BpcError, match=r"^ladder: coded_bytes must be >= 0, got -1$"):
        LadderConfig(base="b.gguf", coded_bytes=-1).check()  # code that builds a config is held to the keys too
    assert config.merged(None, {"base": "b.gguf", "mix": "match"})[0].mix == "match"
    with pytest.raises(BpcError, match=r"^unknown mix mode 'ppm' \(known: none, match\)$"):
        config.merged(None, {"base": "b.gguf", "mix": "ppm"})
    with pytest.raises(BpcError, match=r"^unknown policy 'rolling' \(known: lanes, chunks\)$"):
        config.merged(None, {"base": "b.gguf", "policy": "rolling"})
    with pytest.raises(BpcError, match="discard applies to the lanes policy only"):
        config.merged(None, {"base": "b.gguf", "policy": "chunks", "discard": 8})
    with pytest.raises(BpcError, match=r"discard must be between 1 and context − 1 = 63, got 64"):
        config.merged(None, {"base": "b.gguf", "context": 64, "discard": 64})
    with pytest.raises(BpcError, match="context must be at least 2 tokens"):
        config.merged(None, {"base": "b.gguf", "context": 1})
    path.write_text('[ladder]\nbase = "a.gguf"\nchunk_tokens = 512\n')  # the old key: strict, not ignored
    with pytest.raises(BpcError, match=r"unknown key 'chunk_tokens' \(known: .*policy, context, discard"):
        config.merged(path, {})
    path.write_text('[ladder]\nbase = "a.gguf"\npolicy = "chunks"\ncontext = 256\n')
    assert (config.merged(path, {})[0].policy, config.merged(path, {})[0].context) == ("chunks", 256)


def test_bench_config_is_valid():
    table = config.load_table(LADDER_CONFIG)
    assert table["reexpand"] is True and table["base"] == "smollm2-135m"
    assert quantize.parse_levels(table["levels"]) == list(quantize.DEFAULT_LEVELS)
    assert len(corpora.expand(table["corpora"])) == 3


# -- the real model -----------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_kld_follows_real_bits_per_weight(monkeypatch):
    monkeypatch.setenv("BPCBENCH_CACHE", str(USER_CACHE))
    try:
        models.resolve_path("smollm2-135m")
    except BpcError as e:
        pytest.skip(f"SmolLM2 not installed ({e}); run `make models`")
    cfg = LadderConfig(base="smollm2-135m", reexpand=True, levels=list(LEVELS), corpora=["alice29"],
                              max_bytes=2000, include_source=False)
    result = run_ladder(cfg)
    lv = [r for r in result.levels if r.kind == "level"]
    assert all(r.summary for r in lv), [r.error for r in lv]
    assert result.base.label == "F16 re-expanded from Q4_1"
    # SmolLM2's rows (576) are no multiple of 256: its "Q2_K" keeps 180 of 272 tensors at Q4_0
    q2 = next(r for r in lv if r.level == "Q2_K").report
    assert q2.tensors_total == 272 and q2.tensors_fallback == 180 and q2.tensor_types.get("Q4_0") == 180
    by_bpw = sorted(lv, key=lambda r: -r.report.bits_per_weight)
    kld = [r.summary["all"]["kld_mean"] for r in by_bpw]
    assert kld == sorted(kld), [(r.level, r.report.bits_per_weight, k) for r, k in zip(by_bpw, kld)]
    assert [r.level for r in by_bpw] == list(LEVELS)
