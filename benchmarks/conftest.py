"""Micro-benchmarks (pytest-benchmark): `make bench-micro`. Figures go in commit messages, not asserts."""

from __future__ import annotations

import pytest
import real_model

from bpcbench.errors import BpcError
from bpcbench.llama.binding import Model
from bpcbench.models import resolve_path


@pytest.fixture(scope="session")
def smollm2():
    try:
        _, path = resolve_path("smollm2-135m")
    except BpcError as e:
        pytest.skip(str(e))
    with Model(path) as model:
        yield model


@pytest.fixture(scope="module")
def session():
    """SmolLM2 as a codec session (model + vocabulary), per module."""
    with real_model.smollm2_session() as s:
        yield s


def pytest_terminal_summary(terminalreporter):
    """Print what the benchmarks recorded as ("host_step", line) user properties (tokens/s and the like)."""
    lines = [v for rep in terminalreporter.stats.get("passed", []) for k, v in rep.user_properties if k == "host_step"]
    if lines:
        terminalreporter.section("host step")
        for line in lines:
            terminalreporter.write_line(line)
