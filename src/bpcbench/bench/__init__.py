"""The bench harness: matrix -> measure -> cache -> results -> compare, plus shards and nightly runs.

matrix, matrix_keys  TOML matrices (data/matrices/*.toml ship with the package), their keys
labels    the one cell label
measure   one cell -> its numbers
cache     finished cells on disk
runner    every cell of a matrix, written as it finishes
incomplete  the INCOMPLETE.json marker of a stopped run
results   results.csv: the column registry, reader and writer (migrations: older schemas)
compare   one run against another (the regression gate)
shard, merge, nightly
"""
