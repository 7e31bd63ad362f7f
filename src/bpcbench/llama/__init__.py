"""llama.cpp: the only package that talks to llama-cpp-python and ctypes.

binding     models, contexts, batches, logits, the build description, log capture
lanes       the one Plan and LaneEvaluator (coder), StreamEvaluator (ideal rows)
evaluation  PrefillEvaluator: other tools' windows (llama-perplexity, lm-eval), ideal only
quantizer   llama.cpp's own quantizer
"""
