"""Named ideal policies: the windows each builds (by hand and against the external tools' own
rules, transliterated), and what `score` makes of them on the tiny model."""

from __future__ import annotations

import entropy_reference
import numpy as np
import pytest

from bpcbench.codec import entropy_model, policies
from bpcbench.codec.policies import (
    Window,
    llama_perplexity,
    lm_eval_rolling,
    score,
    windows_for,
)
from bpcbench.llama.binding import Batch, Context, logits_rows
from bpcbench.errors import BpcError
from bpcbench.llama.lanes import StreamEvaluator, plan_chunks

T = np.arange(100, 110, dtype=np.int32)  # t0 … t9
S = 7  # start / BOS / prefix token


def as_lists(windows):
    return [(w.inputs.tolist(), w.first_row, w.targets.tolist()) for w in windows]


def t(*idx):
    return [int(T[i]) for i in idx]


# -- chunks: the coder's plan (llama/lanes.py plan_chunks), not a policy of its own ---------------


def coder_chunks(tokens: np.ndarray, start_token: int, context: int) -> list[Window]:
    """The coder's chunks as windows that `score` evaluates by prefill, each from the start token:
    an independent path to the bits cross_entropy measures on the plan."""
    tokens = np.asarray(tokens, dtype=np.int32)
    offs = plan_chunks(len(tokens), context, 1).offsets()
    return [Window(np.concatenate([[start_token], tokens[a : b - 1]]).astype(np.int32), 0, tokens[a:b])
            for a, b in zip(offs[:-1], offs[1:])]


def test_chunks_by_hand():
    assert as_lists(coder_chunks(T, S, 4)) == [
        ([S] + t(0, 1, 2), 0, t(0, 1, 2, 3)),
        ([S] + t(4, 5), 0, t(4, 5, 6)),
        ([S] + t(7, 8), 0, t(7, 8, 9)),
    ]


def test_chunks_edges():
    assert plan_chunks(0, 4, 1).lengths == ()
    assert plan_chunks(1, 4, 1).lengths == (1,)
    assert plan_chunks(8, 4, 1).lengths == (4, 4)
    assert plan_chunks(9, 4, 1).lengths == (3, 3, 3)
    with pytest.raises(BpcError, match="at least 2 tokens"):
        plan_chunks(10, 1, 1)


def test_chunk_count_does_not_depend_on_a_width():
    # whole alice29 under SmolLM2: 41,933 tokens; 0.3.0's padded coder rounded 82 chunks up to 96 (width 32)
    coded = plan_chunks(41933, 512, 32)
    assert coded.n_lanes == 82 and plan_chunks(41933, 512, 1).lengths == coded.lengths
    assert [len(w) for w in coded.waves()] == [32, 32, 18]


# -- llama-perplexity ------------------------------------------------------------------------


def test_llama_perplexity_by_hand_with_bos():
    # [B t0 … t9]: 11 tokens, 2 windows of 4; first = 2, so row 2 predicts token 3 of each window
    assert as_lists(llama_perplexity(T, S, True, 4)) == [
        ([S] + t(0, 1), 2, t(2)),
        ([S] + t(4, 5), 2, t(6)),  # window [t3 t4 t5 t6], its t3 replaced by BOS
    ]


def test_llama_perplexity_by_hand_without_bos():
    # 10 tokens, 2 windows [t0..t3] [t4..t7] fed as they are; t8, t9 (the tail) never scored
    assert as_lists(llama_perplexity(T, S, False, 4)) == [(t(0, 1, 2), 2, t(3)), (t(4, 5, 6), 2, t(7))]


def test_llama_perplexity_refuses_what_the_tool_refuses():
    # fewer than 2·n_ctx tokens: llama-perplexity prints an error and no PPL, even where one window fits
    with pytest.raises(ValueError, match="at least 8"):
        llama_perplexity(T[:7], S, False, 4)
    with pytest.raises(ValueError):
        llama_perplexity(T[:0], S, True, 4)
    assert len(llama_perplexity(T[:7], S, True, 4)) == 2  # BOS makes the 8th token
    with pytest.raises(ValueError):
        llama_perplexity(T, S, False, 2)


def _perplexity_cpp(tokens, bos, add_bos, n_ctx):
    """perplexity.cpp `perplexity()`, transliterated: (position fed, window token list, scored (j, token))."""
    tokens = ([bos] if add_bos else []) + list(tokens)  # common_tokenize(ctx, prompt, add_special=true)
    if len(tokens) < 2 * n_ctx:
        return None
    out, first = [], n_ctx // 2
    for i in range(len(tokens) // n_ctx):
        start = i * n_ctx
        fed = tokens[start : start + n_ctx]
        if add_bos:
            fed[0] = bos
        scored = [(j, tokens[start + j + 1]) for j in range(first, n_ctx - 1)]
        out.append((fed, scored))
    return out


@pytest.mark.parametrize("add_bos", [False, True])
@pytest.mark.parametrize("n", [0, 7, 8, 9, 15, 16, 17, 40, 1029])
@pytest.mark.parametrize("n_ctx", [4, 5, 8, 512])
def test_llama_perplexity_follows_the_tool(n, n_ctx, add_bos):
    tokens = np.arange(1000, 1000 + n, dtype=np.int32)
    ref = _perplexity_cpp(tokens.tolist(), S, add_bos, n_ctx)
    if ref is None:
        with pytest.raises(ValueError):
            llama_perplexity(tokens, S, add_bos, n_ctx)
        return
    got = llama_perplexity(tokens, S, add_bos, n_ctx)
    assert len(got) == len(ref)
    for w, (fed, scored) in zip(got, ref):
        assert w.inputs.tolist() == fed[:-1]
        assert [(w.first_row + k, int(tok)) for k, tok in enumerate(w.targets)] == scored
    if n_ctx == 512:
        assert {len(w.targets) for w in got} == {255}
        assert (got[0].context_tokens.min(), got[0].context_tokens.max()) == (257, 511)


# -- lm-eval rolling -----------------------------------------------------------------------


def test_lm_eval_rolling_by_hand():
    assert as_lists(lm_eval_rolling(T, S, 4)) == [
        ([S] + t(0, 1, 2), 0, t(0, 1, 2, 3)),
        (t(3, 4, 5, 6), 0, t(4, 5, 6, 7)),  # t4 is predicted from t3 alone
        (t(5, 6, 7, 8), 2, t(8, 9)),  # the last window: full context, only its last 2 rows scored
    ]


def test_lm_eval_rolling_edges():
    assert lm_eval_rolling(T[:0], S, 4) == []
    assert as_lists(lm_eval_rolling(T[:3], S, 4)) == [([S] + t(0, 1), 0, t(0, 1, 2))]
    assert as_lists(lm_eval_rolling(T[:5], S, 4)) == [([S] + t(0, 1, 2), 0, t(0, 1, 2, 3)), (t(0, 1, 2, 3), 3, t(4))]
    with pytest.raises(ValueError):
        lm_eval_rolling(T, S, 0)


def _rolling_harness(token_list, prefix_token, max_length):
    """lm_eval/utils.py get_rolling_token_windows(context_len=1) + make_disjoint_window, then
    HFLM._loglikelihood_tokens' input, transliterated: (model input, scored continuation)."""
    context_len = 1
    out = []
    if not token_list:
        return out
    pred_len = max_length - context_len + 1
    predicted = 0
    first_seq_len = min(max_length, len(token_list))
    pairs = [([prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len])]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        pairs.append((token_list[window_end - max_length - 1 : window_end - 1],
                      token_list[window_end - window_pred_len : window_end]))
        predicted += window_pred_len
    for a, b in pairs:
        context, continuation = a[: len(a) - (len(b) - 1)], b  # make_disjoint_window
        inp = (context + continuation)[-(max_length + 1) :][:-1]
        out.append((inp, continuation))
    return out


@pytest.mark.parametrize("max_length", [1, 2, 3, 4, 7, 64])
def test_lm_eval_rolling_follows_the_harness(max_length):
    for n in range(0, 40):
        tokens = list(range(1000, 1000 + n))
        got = lm_eval_rolling(np.array(tokens, dtype=np.int32), S, max_length)
        ref = _rolling_harness(tokens, S, max_length)
        assert [(w.inputs.tolist(), w.targets.tolist()) for w in got] == ref
        assert all(w.first_row + len(w.targets) == len(w.inputs) for w in got)  # the last len(cont) rows


# -- every policy --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(policies.POLICIES))
def test_each_input_after_a_scored_row_is_the_token_it_predicted(name):
    tokens = np.arange(1000, 1057, dtype=np.int32)
    wins = windows_for(name, tokens, S, True, 8)
    assert wins and policies.POLICIES[name].description
    for w in wins:
        assert w.inputs.dtype == np.int32 and w.targets.dtype == np.int32
        assert w.inputs[w.first_row + 1 : w.first_row + len(w.targets)].tolist() == w.targets[:-1].tolist()
    scored = np.concatenate([w.targets for w in wins])
    if name != "llama-perplexity":  # every token exactly once, in order
        assert scored.tolist() == tokens.tolist()


def test_registry_and_window_checks():
    assert as_lists(windows_for("lm-eval-rolling", T, S, True, 4)) == as_lists(lm_eval_rolling(T, S, 4))
    for coder_policy in ("lanes", "chunks"):  # the coder's layouts are plans, not windows
        with pytest.raises(ValueError, match="unknown policy"):
            windows_for(coder_policy, T, S, True, 4)
    with pytest.raises(ValueError):
        Window(np.zeros(3, np.int32), 2, np.zeros(2, np.int32))
    assert policies.context_stats(lm_eval_rolling(T, S, 4)) == (pytest.approx((10 + 10 + 3 + 4) / 10), 1, 4)
    assert policies.context_stats([])[1:] == (0, 0)


def test_price_leaves_the_escape_mass_out_of_the_plain_nll():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 50)).astype(np.float32)
    symbols = np.array([3, 0, 49, 7, 51])  # 51: an escape symbol (vocabulary 50, 4 escapes)
    bits, nll = policies._price(logits, symbols, 4)
    x = logits.astype(np.float64)
    plain = np.log(np.exp(x).sum(axis=1)) - x[np.arange(5), np.minimum(symbols, 49)]
    coder = entropy_reference.ideal_bits(entropy_reference.weights(logits, 4), symbols)
    assert bits == pytest.approx(coder.sum(), rel=1e-6)  # the kernel's float tolerance (codec/kernel.py)
    assert coder[:4] == pytest.approx(plain[:4] / np.log(2) - np.log2(1 - entropy_model.ESCAPE_MASS), rel=1e-12)
    assert nll == pytest.approx(plain[:4].sum() + coder[4] * np.log(2), rel=1e-6)


# -- on the tiny model ---------------------------------------------------------------------


def _reference_logits(model, inputs: np.ndarray) -> np.ndarray:
    """Every row of one window, float64, evaluated alone: a fresh StreamEvaluator (the ideal path of
    the coder's plans) where the window starts with the start token (it puts that token first),
    else one fresh llama_decode."""
    if inputs[0] == model.start_token:
        with StreamEvaluator(model, context=len(inputs), discard=0, threads=1) as ev:
            lane = np.append(inputs[1:], 0).astype(np.int32)  # fed: [start] + lane[:-1] == inputs
            return np.concatenate([rows.astype(np.float64) for _, rows in ev.blocks(lane)])
    with Context(model, n_seq=1, n_ctx_per_seq=len(inputs), n_batch=len(inputs), threads=1) as ctx, \
            Batch(len(inputs)) as batch:
        batch.set_seq_ids([0] * len(inputs))
        batch.token[: len(inputs)] = inputs
        batch.pos[: len(inputs)] = np.arange(len(inputs))
        batch.logits[:] = 1
        batch.decode(ctx, len(inputs))
        return logits_rows(ctx, len(inputs), model.n_vocab).astype(np.float64)


def _reference(model, windows):
    """Per-window Σ −log2 softmax and the total Σ −ln softmax, in numpy float64."""
    bits, nll = [], 0.0
    for w in windows:
        x = _reference_logits(model, w.inputs)[w.first_row : w.first_row + len(w.targets)]
        m = x.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
        cost = lse - x[np.arange(len(w.targets)), w.targets]
        bits.append(cost.sum() / np.log(2))
        nll += cost.sum()
    return np.array(bits), nll


@pytest.fixture(scope="module")
def tiny_tokens(tiny_session):
    text = b"The quick brown fox jumps over the lazy dog, then the dog sleeps in the sun. " * 12
    return tiny_session.vocab.tokenize(text).tokens


CASES = [("chunks", False, 48), ("llama-perplexity", False, 40), ("llama-perplexity", True, 40),
         ("lm-eval-rolling", False, 48), ("lm-eval-rolling", False, 300)]


@pytest.mark.parametrize("name,add_bos,context", CASES)
def test_bits_equal_a_numpy_log_softmax_of_each_window(tiny_session, tiny_tokens, name, add_bos, context):
    model, vocab = tiny_session.model, tiny_session.vocab
    assert not vocab.escape_bytes  # the tiny vocabulary spells every byte: coder table == plain softmax
    wins = (coder_chunks(tiny_tokens, model.start_token, context) if name == "chunks"
            else windows_for(name, tiny_tokens, model.start_token, add_bos, context))
    assert len(wins) >= 2
    got = score(model, vocab, wins, threads=1)
    ref_bits, ref_nll = _reference(model, wins)
    np.testing.assert_allclose(got.window_bits, ref_bits, rtol=1e-6)  # the kernel's float tolerance
    assert got.nll == pytest.approx(ref_nll, rel=1e-6)
    assert got.n_tokens == sum(len(w.targets) for w in wins)
    assert got.ppl == pytest.approx(np.exp(ref_nll / got.n_tokens), rel=1e-6)
    assert got.ppl == pytest.approx(2 ** (got.total_bits / got.n_tokens), rel=1e-9)
    assert got.n_bytes == sum(len(vocab.detokenize(w.targets)) for w in wins)
    assert (got.context_mean, got.context_min, got.context_max) == policies.context_stats(wins)


def test_a_window_costs_the_same_alone_or_among_longer_ones(tiny_session, tiny_tokens):
    model, vocab = tiny_session.model, tiny_session.vocab
    wins = lm_eval_rolling(tiny_tokens, model.start_token, 300)  # 300, 300, then a short last window
    together = score(model, vocab, wins, threads=1)
    alone = [score(model, vocab, [w], threads=1).total_bits for w in wins]
    assert together.window_bits.tolist() == alone


def test_no_windows_score_nothing(tiny_session):
    got = score(tiny_session.model, tiny_session.vocab, [], threads=1)
    assert (got.total_bits, got.n_tokens, got.nll) == (0.0, 0, 0.0)
    assert np.isnan(got.ppl) and np.isnan(got.context_mean)


# -- on the real model (SmolLM2) -------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_llama_perplexity_and_the_coders_chunks(smollm2_session):
    from bpcbench.corpora import resolve

    model, vocab = smollm2_session.model, smollm2_session.vocab
    data = resolve("alice29").read_bytes()[:20_000]
    tokens = vocab.tokenize(data).tokens
    wins = windows_for("llama-perplexity", tokens, model.start_token, model.add_bos, 512)
    got = score(model, vocab, wins, threads=1)
    assert got.n_tokens == 255 * (len(tokens) // 512) and 5 < got.ppl < 60

    few = tokens[: 2 * 512 - 100]  # two chunks
    plan = plan_chunks(len(few), 512, 32)
    assert plan.lengths == (462, 462)
    n_escapes = len(vocab.escape_bytes)
    lane_bits, offs = [], plan.offsets()
    with StreamEvaluator(model, context=512, discard=plan.discard, threads=1) as ev:  # cross_entropy's path
        for i in range(plan.n_lanes):
            chunk = few[offs[i] : offs[i + 1]]
            lane_bits.append(sum(entropy_model.ideal(rows, chunk[f : f + len(rows)], n_escapes)[0].sum()
                                 for f, rows in ev.blocks(vocab.model_input(chunk))))
    windows = score(model, vocab, coder_chunks(few, model.start_token, 512), threads=1)
    np.testing.assert_allclose(windows.window_bits, lane_bits, rtol=1e-12)
