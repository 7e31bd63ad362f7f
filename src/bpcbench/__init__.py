"""bpcbench: how many bits per byte a (quantized) language model needs to store real text.

Pipeline, one module per step:
corpora -> tokenization -> evaluation (llama.cpp) -> entropy_model -> coder -> container
-> codec, with baselines -> runner -> report / compare -> cli.
"""

__version__ = "0.3.0"
