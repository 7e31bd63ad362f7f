"""Bench matrices: what a TOML file expands to, and one-line errors that name the file and entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpcbench.baselines import BASELINES
from bpcbench.bench import matrix, matrix_keys, measure
from bpcbench.corpora import load_manifest, select
from bpcbench.errors import BpcError

BASE = """
[run]
name = "t"
models = ["smollm2-135m"]
corpora = ["alice29"]
"""


def load(text: str, tmp_path, name: str = "m.toml"):
    path = tmp_path / name
    path.write_text(text)
    return matrix.load(path)


def error(text: str, tmp_path) -> str:
    with pytest.raises(BpcError) as info:
        load(text, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "m.toml") in message  # names the file
    return message


def test_minimal_matrix_defaults(tmp_path):
    m = load(BASE, tmp_path)
    assert m.name == "t"
    llm = [c for c in m.cells if c.is_llm]
    base = [c for c in m.cells if not c.is_llm]
    assert [(c.measure, c.codec, c.corpus, c.policy, c.context, c.max_bytes) for c in llm] == [
        ("ideal", "llm:smollm2-135m", "alice29", "lanes", None, 0)  # context None: the model's own
    ]
    assert sorted(c.codec for c in base) == sorted(BASELINES)
    assert all(c.corpus == "alice29" and c.max_bytes == 0 for c in base)


def test_groups_sweeps_and_overrides(tmp_path):
    m = load(
        """
[run]
name = "sweep"
models = ["smollm2-135m", "gemma3-270m"]
corpora = ["canterbury", "iso3166-1"]
baselines = ["gzip-9"]
context = [128, 512]
max_bytes = 1000

[[llm]]
models = ["smollm2-135m"]
corpora = ["alice29"]
measure = "coded"
context = 256
max_bytes = 2000

[[llm]]
models = ["gemma3-270m"]
corpora = ["iso3166-1"]
measure = "none"
""",
        tmp_path,
    )
    canterbury = [c.name for c in select(["canterbury"])]
    assert len(canterbury) == 4
    llm = {(c.codec, c.corpus, c.context): c for c in m.cells if c.is_llm}
    # 2 models x 5 corpora x 2 contexts, minus smollm2/alice29 (one coded cell instead of
    # two ideal ones) and gemma/iso3166-1 (none)
    assert len(llm) == 20 - 2 + 1 - 2
    coded = llm[("llm:smollm2-135m", "alice29", 256)]
    assert (coded.measure, coded.max_bytes) == ("coded", 2000)
    assert ("llm:gemma3-270m", "iso3166-1", 512) not in llm
    assert llm[("llm:gemma3-270m", "alice29", 128)].measure == "ideal"
    # a baseline on every (corpus, prefix) a model measures, so tables compare equal bytes
    views = {(c.corpus, c.max_bytes) for c in m.cells if c.measure == "baseline"}
    assert views == {(c, 1000) for c in canterbury + ["iso3166-1"]} | {("alice29", 2000)}


def test_model_and_corpus_paths_relative_to_the_matrix(tmp_path):
    (tmp_path / "my.gguf").write_bytes(b"GGUF")
    (tmp_path / "text.txt").write_text("hello")
    m = load('[run]\nname = "p"\nmodels = ["my.gguf"]\ncorpora = ["text.txt"]\nbaselines = []\n', tmp_path)
    (cell,) = m.cells
    assert cell.model == str((tmp_path / "my.gguf").absolute())
    assert cell.corpus == str((tmp_path / "text.txt").resolve())
    assert cell.codec == "llm:my"


@pytest.mark.parametrize(
    "text, expected",
    [
        (BASE.replace("models", "modles"), "[run]: unknown key 'modles'"),
        (BASE + "[[llm]]\nmeasure = 'coded'\n[[llm]]\ncontxt = 5\n", "[[llm]] 2: unknown key 'contxt'"),
        (BASE.replace('"smollm2-135m"', '"no-such-model"'), "[run] models: model not found: no-such-model"),
        (BASE.replace('"alice29"', '"alice30"'), "[run] corpora: unknown corpus or group 'alice30'"),
        (BASE + "[[llm]]\ncorpora = ['nope']\n", "[[llm]] 1 corpora: unknown corpus or group 'nope'"),
        (BASE + "context = '512'\n", "context must be a positive integer or a list of them"),
        (BASE + "context = [512, 0]\n", "context entries must be positive integers, got 0"),
        (BASE + "policy = 'rolling'\n", "policy must be one of lanes, chunks, llama-perplexity, lm-eval-rolling"),
        (BASE + "measure = 'coded'\npolicy = 'lm-eval-rolling'\n", "lm-eval-rolling scores ideal rows only"),
        (BASE + "max_bytes = -1\n", "max_bytes must be >= 0"),
        (BASE + "width = true\n", "width must be a positive integer, got True"),
        (BASE + "measure = 'exact'\n", "measure must be \"coded\", \"ideal\" or \"none\""),
        (BASE + "baselines = ['gzip-9', 'lz4']\n", "unknown baseline 'lz4'"),
        (BASE + "baselines = 'some'\n", 'baselines must be "all" or a list'),
        (BASE.replace('corpora = ["alice29"]', "corpora = []"), "corpora must not be empty"),
        (BASE.replace('name = "t"', 'name = "a b"'), "name 'a b' must be letters"),
        (BASE.replace('name = "t"\n', ""), "[run]: missing key 'name'"),
        ('[runn]\nname = "x"\n', "top level: unknown key 'runn'"),
        ("name = 'x'\n", "top level: unknown key 'name'"),
        (BASE + "[llm]\nmeasure = 'coded'\n", "[llm]: must be written [[llm]]"),
        (BASE.replace("models = [\"smollm2-135m\"]", "models = []") + "baselines = []\n", "the matrix has no cells"),
        (BASE + "[[llm]]\nmeasure = 'coded'\nwidth = 0\n", "[[llm]] 1: width must be >= 1"),
    ],
)
def test_validation_errors_name_the_file_and_entry(tmp_path, text, expected):
    assert expected in error(text, tmp_path)


def test_invalid_toml_and_missing_file(tmp_path):
    assert "invalid TOML" in error("[run\n", tmp_path)
    with pytest.raises(BpcError, match="bench matrix not found"):
        matrix.load(tmp_path / "absent.toml")


def test_two_gguf_files_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "b" / "m.gguf").write_bytes(b"GGUF")
    message = error('[run]\nname = "x"\nmodels = ["a/m.gguf", "b/m.gguf"]\ncorpora = ["alice29"]\n', tmp_path)
    assert "both be reported as llm:m" in message


def test_with_overrides_changes_model_cells_only(tmp_path):
    m = matrix.with_overrides(load(BASE, tmp_path), threads=3)
    assert {c.threads for c in m.cells if c.is_llm} == {3}
    assert {c.threads for c in m.cells if not c.is_llm} == {None}


@pytest.mark.parametrize("path", [matrix.DEFAULT_MATRIX, matrix.QUICK_MATRIX], ids=["default", "quick"])
def test_shipped_matrices_are_valid(path):
    m = matrix.load(path)
    assert m.name == path.stem
    coded = [c for c in m.cells if c.measure == "coded"]
    assert coded and all(c.model == "smollm2-135m" for c in coded)
    # every model cell has baselines on exactly its bytes
    views = {(c.corpus, c.max_bytes) for c in m.cells if c.measure == "baseline"}
    assert {(c.corpus, c.max_bytes) for c in m.cells if c.is_llm} <= views
    manifest = load_manifest()
    assert all(c.corpus in manifest for c in m.cells)


@pytest.mark.parametrize("name", ["nightly", "context"])
def test_every_shipped_matrix_loads_by_name(name):
    m = matrix.load(name)
    assert m.name == name and m.cells
    assert all(c.policy == "lanes" for c in m.cells if c.is_llm)


def test_a_context_sweep_makes_one_cell_per_window():
    contexts = sorted(c.context for c in matrix.load("context").cells if c.is_llm)
    assert contexts == [256, 512, 1024, 2048, 4096, 8192]


def test_reference_doc_is_generated_from_the_key_table():
    doc = Path(__file__).resolve().parents[2] / "docs" / "matrix.md"
    assert doc.read_text() == matrix_keys.reference_markdown(), \
        "run: python -m bpcbench.bench.matrix_keys > docs/matrix.md"
    text = matrix_keys.reference_markdown()
    for key in [*matrix_keys.RUN_KEYS, *matrix_keys.LOSSY_KEYS]:
        assert f"| `{key}` |" in text
    for key in matrix_keys.TOP_LEVEL:
        assert f"| `{key}` |" in text


def test_the_documented_example_and_defaults_are_what_the_validator_does(tmp_path):
    example = matrix_keys.FORMAT.split("```toml\n")[1].split("```")[0]
    cells = load(example, tmp_path).cells
    assert {c.measure for c in cells} == {"baseline", "ideal", "coded"}
    llm = [c for c in load(BASE, tmp_path).cells if c.is_llm]
    keys = matrix_keys.RUN_KEYS
    assert (llm[0].measure, [llm[0].policy], llm[0].width, llm[0].min_lane_tokens, llm[0].max_bytes) == (
        keys["measure"].default, [keys["policy"].default], keys["width"].default, keys["min_lane_tokens"].default,
        keys["max_bytes"].default)


def test_a_mix_list_makes_llm_and_llm_plus_match_rows_beside_each_other(tmp_path):
    m = load(BASE.replace('[run]', '[run]\nmix = ["none", "match"]'), tmp_path)
    llm = [c for c in m.cells if c.is_llm]
    assert [(c.codec, c.mix) for c in llm] == [("llm:smollm2-135m", "none"), ("llm+match:smollm2-135m", "match")]
    assert measure.settings(llm[1]).mix == "match"


@pytest.mark.parametrize("mix, expected", [('"ppm"', "mix must be one of none, match, got 'ppm'"),
                                           ('"match"\npolicy = "llama-perplexity"', "mixing needs lanes or chunks")])
def test_a_bad_mix_is_refused_in_one_line(tmp_path, mix, expected):
    assert expected in error(BASE.replace("[run]", f"[run]\nmix = {mix}"), tmp_path)
