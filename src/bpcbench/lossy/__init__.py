"""The lossy view: rate-distortion curves of the lossy codec (codec/lossy.py).

distortion  how far a reconstruction is from the original, four ways
curve       a curve per model and text: encode, decode, check, measure, write lossy.csv
"""
