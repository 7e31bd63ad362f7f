"""The bench harness: matrix -> measure -> cache -> results -> compare, plus shards and nightly runs.

matrix    TOML matrices (matrices/*.toml ship with the package)
measure   one cell -> its numbers
cache     finished cells on disk
runner    every cell of a matrix, written as it finishes
results   results.csv: the column registry, reader and writer
compare   one run against another (the regression gate)
shard, merge, nightly
"""
