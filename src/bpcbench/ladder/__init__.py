"""Quantization ladder: one base GGUF, many levels, each scored against the base on the same tokens.

config    [ladder] TOML and options
scoring   bits, KL divergence and top-token agreement, block by block
run       the ladder
results   ladder.csv / ladder.json rows
"""
