"""Shared fixtures: a tiny GGUF written at test time, and the real default model when installed."""

from __future__ import annotations

import pytest

from bpcbench.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def other_tiny_model_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-other.gguf", seed=1)


@pytest.fixture(scope="session")
def tiny_session(tiny_model_path):
    from bpcbench.codec import Session

    with Session(str(tiny_model_path)) as session:
        yield session


@pytest.fixture(scope="session")
def smollm2_session():
    from bpcbench.codec import Session
    from bpcbench.errors import BpcError

    try:
        session = Session("smollm2-135m")
    except BpcError as e:
        pytest.skip(f"SmolLM2 not installed ({e}); run `make models`")
    with session:
        yield session
