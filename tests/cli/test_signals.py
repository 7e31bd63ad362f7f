"""SIGTERM and SIGINT end a run in one line with exit 143 or 130 at any moment, model load included,
leaving no partial or temp file (tests/signal_runs.py says what passes). The random-timing campaign
is `python fuzz/signals.py -n 100` (timing-dependent under load, so not part of make test)."""

from __future__ import annotations

import signal

import pytest

from bpcbench.errors import Terminated, catch_signals, restore_signals
from bpcbench.llama import binding


@pytest.fixture
def handlers():
    previous = catch_signals()
    yield
    restore_signals(previous)


@pytest.fixture
def signal_in_log_callback(monkeypatch):
    """The first llama.cpp log line raises SIGTERM inside the ctypes log callback, as a signal that
    arrives while llama.cpp loads a model does: its handler then runs in the callback."""

    class Tripwire(list):
        def append(self, line):
            signal.raise_signal(signal.SIGTERM)

    binding._init_backend()  # its own log lines before the tripwire
    monkeypatch.setattr(binding, "_LOG_LINES", Tripwire())
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    return unraisable


def test_a_signal_inside_the_log_callback_is_raised_once_llama_cpp_returns(handlers, signal_in_log_callback):
    with pytest.raises(Terminated):
        binding._init_backend.callback(2, b"a log line\n", None)  # through ctypes, as llama.cpp calls it
        print("the first call outside the callback raises")
    assert signal_in_log_callback == []  # not "Exception ignored on calling ctypes callback function"


def test_a_signal_inside_a_finalizer_is_raised_once_it_returns(handlers, monkeypatch):
    """A SIGINT whose handler runs in a __del__ (llvmlite's ObjectRef when numba's objects are
    collected) would be printed as "Exception ignored" and dropped: it waits for the frame's end."""
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        obj = Finalized()
        del obj
        print("the first call after the finalizer raises")
    assert unraisable == []


def test_a_signal_during_model_load_ends_the_load(handlers, signal_in_log_callback, tiny_model_path):
    with pytest.raises(Terminated):
        binding.Model(tiny_model_path)
    assert signal_in_log_callback == []
