"""--shard K/N: every cell in exactly one shard, the same split in every process, balanced by
estimated cost (model cells spread out, not piled on one shard), clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bpcbench.bench import matrix, shard
from bpcbench.bench.matrix import Cell
from bpcbench.errors import BpcError

CELLS = [Cell("coded" if i % 3 else "ideal", f"llm:m{i % 2}", f"corpus{i}", max_bytes=i * 10,
              model=f"m{i % 2}", context=512) for i in range(40)]
CELLS += [Cell("baseline", "zstd-19", f"corpus{i}") for i in range(10)]


@pytest.fixture(scope="module")
def default_cells():
    return matrix.load("default").cells


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_every_cell_in_exactly_one_shard(n):
    shards = [shard.select(CELLS, k, n) for k in range(1, n + 1)]
    seen = [c for s in shards for c in s]
    assert sorted(map(shard.cell_id, seen)) == sorted(map(shard.cell_id, CELLS))
    assert len(seen) == len(CELLS)
    assert all(1 <= k <= n for k in shard.assign(CELLS, n))


def test_order_within_a_shard_follows_the_matrix():
    part = shard.select(CELLS, 1, 3)
    assert part == [c for c in CELLS if c in part]


def test_split_is_stable_across_processes(default_cells):
    code = ("from bpcbench.bench import matrix, shard; "
            "print(shard.assign(matrix.load('default').cells, 8))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert runs == {f"{shard.assign(default_cells, 8)}\n"}


def test_split_depends_on_the_cells_not_their_order():
    n = 4
    owner = {shard.cell_id(c): k for c, k in zip(CELLS, shard.assign(CELLS, n))}
    flipped = list(reversed(CELLS))
    assert {shard.cell_id(c): k for c, k in zip(flipped, shard.assign(flipped, n))} == owner


def test_default_matrix_spreads_model_cells_over_eight_shards(default_cells):
    owners = shard.assign(default_cells, 8)
    model_shards = {k for c, k in zip(default_cells, owners) if c.model is not None}
    assert model_shards == set(range(1, 9))  # 20 model cells: every shard measures some
    baselines = [sum(1 for c, o in zip(default_cells, owners) if c.model is None and o == k) for k in range(1, 9)]
    assert max(baselines) - min(baselines) <= 1  # round-robin
    assert shard.imbalance(default_cells, 8) < 1.25
    assert shard.imbalance(default_cells, 2) < 1.05


def test_costly_cells_go_to_different_shards():
    big = [Cell("coded", "llm:gemma3-270m", f"c{i}", max_bytes=100_000, model="gemma3-270m") for i in range(3)]
    small = [Cell("ideal", "llm:smollm2-135m", f"c{i}", max_bytes=1000, model="smollm2-135m") for i in range(30)]
    owners = shard.assign(big + small, 3)
    assert sorted(owners[:3]) == [1, 2, 3]
    assert shard.imbalance(big + small, 3) < 1.1


def test_cost_estimate_reads_no_model():
    assert shard.model_params("smollm2-135m") == 135_000_000
    assert shard.model_params("gemma3-270m") == 270_000_000
    assert shard.model_params("/models/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf") == 1_500_000_000
    assert shard.model_params("/nowhere/tiny.gguf") == shard.DEFAULT_MODEL_PARAMS
    coded = Cell("coded", "llm:x", "alice29", max_bytes=1000, model="smollm2-135m")
    ideal = Cell("ideal", "llm:x", "alice29", max_bytes=1000, model="smollm2-135m")
    assert shard.cost(coded) == 2 * shard.cost(ideal) == 2 * 1000 * 135_000_000
    # a whole manifest corpus counts its pinned size, a prefix larger than the file the file
    whole = Cell("ideal", "llm:x", "alice29", model="smollm2-135m")
    assert shard.cell_bytes(whole) == shard.cell_bytes(Cell("ideal", "llm:x", "alice29", max_bytes=10**9)) > 100_000


@pytest.mark.parametrize("spec", ["", "3", "0/4", "5/4", "a/b", "1/0", "-1/3"])
def test_bad_spec_is_a_clear_error(spec):
    with pytest.raises(BpcError, match="--shard"):
        shard.parse(spec)


def test_good_spec():
    assert shard.parse("2/8") == (2, 8)
    assert shard.parse(" 1 / 1 ") == (1, 1)


def test_split_does_not_depend_on_the_checkout_path():
    def cells(root):
        return [Cell("coded", "llm:tiny", f"{root}/corpora/x{i}.txt", max_bytes=1000, model=f"{root}/m/tiny.gguf")
                for i in range(9)] + [Cell("baseline", "gzip-9", f"{root}/corpora/x{i}.txt") for i in range(5)]

    a, b = cells("/home/alice/bpcbench"), cells("/scratch/job42/bpcbench")
    assert [shard.assign(a, n) for n in range(1, 12)] == [shard.assign(b, n) for n in range(1, 12)]
