"""The installed default model for tests and benchmarks, or the test skipped with the line to run."""

from __future__ import annotations

import pytest

from bpcbench.codec.session import Session
from bpcbench.errors import BpcError


def smollm2_session() -> Session:
    """SmolLM2 as a codec session (model + vocabulary); use it as a context manager."""
    try:
        return Session("smollm2-135m")
    except BpcError as e:
        pytest.skip(f"SmolLM2 not installed ({e})")
