"""How far a reconstruction is from its original: four measures, each in [0, 1].

token_error_rate   positions whose token differs from the original's (both have as many tokens)
char_edit_rate     Levenshtein distance between the two texts / characters of the longer one
                   (rapidfuzz's normalized distance; texts decoded as UTF-8, invalid bytes replaced)
chrf_distance      1 - chrF/100, sacrebleu's character n-gram F-score (n <= 6, beta = 2) as a distance
line_error_rate    original lines (split at \\n) not reproduced exactly at the same line number

All are distances: 0 for an identical reconstruction, so every curve falls as the rate rises.

>>> d = measure(b"the cat\\nsat", b"the bat\\nsat", [1, 2, 3], [1, 5, 3])
>>> round(d["token_error_rate"], 3), round(d["char_edit_rate"], 3), d["line_error_rate"]
(0.333, 0.091, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

from functools import lru_cache

import numpy as np

from bpcbench.errors import BpcError

# rapidfuzz and sacrebleu are the lossy extra (pip install 'bpcbench[lossy]'): imported where a
# distance is computed, so the names of the measures (MEASURES) cost the bench and report nothing.


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()  # sacrebleu's defaults: character 6-grams, no word n-grams, beta 2


def token_error_rate(original: Sequence[int], reconstruction: Sequence[int]) -> float:
    a, b = np.asarray(original), np.asarray(reconstruction)
    if a.shape != b.shape:
        raise BpcError(f"token sequences differ in length ({len(a)} vs {len(b)})")
    return float((a != b).mean()) if len(a) else 0.0


def char_edit_rate(original: str, reconstruction: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.normalized_distance(original, reconstruction)


def chrf_distance(original: str, reconstruction: str) -> float:
    if original == reconstruction:
        return 0.0
    return 1.0 - _chrf().sentence_score(reconstruction, [original]).score / 100


def line_error_rate(original: str, reconstruction: str) -> float:
    ref, hyp = original.split("\n"), reconstruction.split("\n")
    return sum(r != (hyp[i] if i < len(hyp) else None) for i, r in enumerate(ref)) / len(ref)


MEASURES = {"token_error_rate": None, "char_edit_rate": char_edit_rate, "chrf_distance": chrf_distance,
            "line_error_rate": line_error_rate}


def check_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise BpcError(f"unknown distortion measure {unknown[0]!r} (known: {', '.join(MEASURES)})")
    return list(names)


def measure(original: bytes, reconstruction: bytes, original_tokens, tokens,
            names: Sequence[str] = tuple(MEASURES)) -> dict[str, float]:
    ref, hyp = original.decode("utf-8", "replace"), reconstruction.decode("utf-8", "replace")
    out = {}
    for name in check_names(names):
        out[name] = (token_error_rate(original_tokens, tokens) if name == "token_error_rate"
                     else MEASURES[name](ref, hyp))
    return out
