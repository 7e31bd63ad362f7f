"""The codec core: bytes -> tokens -> probabilities -> range coder -> container, and back.

tokenization   lossless tokenization with byte escapes
entropy_model  logits -> coder tables and ideal bits
range_coder    constriction's range coder over blocks of positions
split          the cheap test before the model: text and non-text byte ranges
payload        the coder's words as bytes, padded to pay for tokens and KV cells
steps          the encoder's and the decoder's step, side by side
container      the .bpcz file format
session        a loaded model, the settings, their defaults and the plan they give; encode/decode
compress       bytes -> container (and the cost statistics)
decompress     container -> bytes, or one line saying why not
cross_entropy  the ideal (no file) measurement on the fast path
policies       the windows of llama-perplexity and lm-eval, by name (ideal rows)
lossy          the lossy codec: tokens the model guesses are not stored
"""
