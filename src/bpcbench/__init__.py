"""bpcbench: how many bits per byte a (quantized) language model needs to store real text.

Layers, imports pointing down only (pyproject.toml's import-linter contracts; docs/design.md):
llama -> (quantize, levels, environment) -> codec -> {bench | ladder | lossy} -> report -> cli,
above the foundation modules (errors, atomic, defaults, schema, models, corpora, stats, timing,
baselines).
"""

# 0.4.0: results.csv schema 4, the one codec pipeline (chunks files of 0.3.0 are refused).
__version__ = "0.4.0"
