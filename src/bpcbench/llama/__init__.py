"""llama.cpp: the only package that talks to llama-cpp-python and ctypes.

binding     models, contexts, batches, logits, the build description, log capture
evaluation  lockstep (codec) and prefill (cross-entropy only) evaluation
quantizer   llama.cpp's own quantizer
"""
