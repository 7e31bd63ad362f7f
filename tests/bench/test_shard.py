"""--shard K/N: every cell in exactly one shard, the same split in every process, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bpcbench.bench import shard
from bpcbench.bench.matrix import Cell
from bpcbench.errors import BpcError

CELLS = [Cell("coded" if i % 3 else "ideal", f"llm:m{i % 2}", f"corpus{i}", max_bytes=i * 10,
              model=f"m{i % 2}", context=512) for i in range(40)]
CELLS += [Cell("baseline", "zstd-19", f"corpus{i}") for i in range(10)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_every_cell_in_exactly_one_shard(n):
    shards = [shard.select(CELLS, k, n) for k in range(1, n + 1)]
    seen = [c for s in shards for c in s]
    assert sorted(map(shard.cell_id, seen)) == sorted(map(shard.cell_id, CELLS))
    assert len(seen) == len(CELLS)


def test_order_within_a_shard_follows_the_matrix():
    part = shard.select(CELLS, 1, 3)
    assert part == [c for c in CELLS if c in part]


def test_split_is_stable_across_processes():
    code = ("from bpcbench.bench.matrix import Cell; from bpcbench.bench import shard; "
            "print(shard.shard_of(Cell('coded','llm:x','alice29',model='x',context=512), 5))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    here = shard.shard_of(Cell("coded", "llm:x", "alice29", model="x", context=512), 5)
    assert runs == {f"{here}\n"}


def test_adding_a_cell_does_not_move_the_others():
    before = {shard.cell_id(c): shard.shard_of(c, 4) for c in CELLS}
    extra = CELLS + [Cell("baseline", "gzip-9", "new-corpus")]
    after = {shard.cell_id(c): shard.shard_of(c, 4) for c in extra}
    assert all(after[k] == v for k, v in before.items())


def test_shards_are_roughly_balanced():
    sizes = [len(shard.select(CELLS, k, 2)) for k in (1, 2)]
    assert min(sizes) >= len(CELLS) // 4


@pytest.mark.parametrize("spec", ["", "3", "0/4", "5/4", "a/b", "1/0", "-1/3"])
def test_bad_spec_is_a_clear_error(spec):
    with pytest.raises(BpcError, match="--shard"):
        shard.parse(spec)


def test_good_spec():
    assert shard.parse("2/8") == (2, 8)
    assert shard.parse(" 1 / 1 ") == (1, 1)


def test_split_does_not_depend_on_the_checkout_path():
    a = Cell("coded", "llm:tiny", "/home/alice/bpcbench/corpora/x.txt", model="/home/alice/m/tiny.gguf")
    b = Cell("coded", "llm:tiny", "/scratch/job42/bpcbench/corpora/x.txt", model="/scratch/job42/m/tiny.gguf")
    assert [shard.shard_of(a, n) for n in range(1, 20)] == [shard.shard_of(b, n) for n in range(1, 20)]
