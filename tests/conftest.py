"""Shared fixtures: a tiny GGUF written at test time, and the real default model when installed."""

from __future__ import annotations

import pytest
import real_model
from tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def other_tiny_model_path(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-other.gguf", seed=1)


@pytest.fixture(scope="session")
def tiny_session(tiny_model_path):
    from bpcbench.codec.session import Session

    with Session(str(tiny_model_path)) as session:
        yield session


@pytest.fixture(scope="session")
def smollm2_session():
    with real_model.smollm2_session() as session:
        yield session


@pytest.fixture(scope="session")
def make_bench_dir(tmp_path_factory, tiny_model_path):
    """A folder holding tiny.gguf, text.txt and matrix files: where the bench tests run."""

    def make(name: str, text: bytes, **matrices: str):
        d = tmp_path_factory.mktemp(name)
        (d / "tiny.gguf").symlink_to(tiny_model_path)
        (d / "text.txt").write_bytes(text)
        for stem, toml in matrices.items():
            (d / f"{stem}.toml").write_text(toml)
        return d

    return make
