"""The exception types that the CLI turns into a one-line message and a non-zero exit (exit_code).

Also the two signals the CLI turns into exceptions, so that they end a run the same way: one line,
an exit code (130, 143 as a shell reports them), every temp file removed.
"""

import os
import signal
import sys


class BpcError(Exception):
    """A user-facing error: its message is printed as is, without a traceback."""

    exit_code = 2


class CorruptInput(BpcError):
    """A compressed file is truncated, bit-flipped or of an unknown format."""

    exit_code = 3


class Mismatch(BpcError):
    """Decoding was asked for under conditions that differ from the encoder's."""

    exit_code = 4


class OtherSchema(BpcError):
    """A results.csv written under another schema version: readable by the bpcbench that wrote it."""


class StdoutFailed(BpcError):
    """Writing to stdout failed (a full disk, /dev/full): the CLI points stdout at /dev/null after
    the message, so that the interpreter's own flush at exit has nothing left to fail on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every temp file is removed on the way out (exit 143)."""


# Code objects of functions that C calls back (llama.cpp's log callback). A signal's handler that runs
# in one would raise where ctypes prints the exception as "Exception ignored" and drops it, and the run
# would go on to exit 0. There the exception waits instead, in a profile hook (called at every Python
# call and return, C calls included) that raises it at the first event outside the callback: when the
# llama.cpp call that logged has returned to Python.
_CALLED_FROM_C: set = set()


def called_from_c(fn):
    """Decorator for a callback that C code calls (under ctypes' own decorator): signals wait until it is left."""
    _CALLED_FROM_C.add(fn.__code__)
    return fn


def _in_callback(frame) -> bool:
    """In a function C calls back, or in a finalizer (`__del__`, e.g. llvmlite's ObjectRef when numba's
    objects are collected): Python prints an exception raised there as "Exception ignored" and drops
    it just the same, so the signal waits until the frame is left."""
    while frame is not None:
        if frame.f_code in _CALLED_FROM_C or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _raise_unless_in_callback(frame, e: KeyboardInterrupt) -> None:
    if not _in_callback(frame):
        raise e

    def deliver(frame, event, arg):
        if not _in_callback(frame):
            sys.setprofile(None)
            raise e

    sys.setprofile(deliver)


def _terminate(signum, frame):
    _raise_unless_in_callback(frame, Terminated())


def _interrupt(signum, frame):
    _raise_unless_in_callback(frame, KeyboardInterrupt())


def catch_signals() -> dict:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt, from here on; returns the previous
    handlers for restore_signals(). Installed before the heavy imports (numpy, llama_cpp: most of a
    second) so that a signal at any moment ends in one line. Outside the main thread: nothing."""
    wanted = {signal.SIGTERM: _terminate, signal.SIGINT: _interrupt}
    try:
        return {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    except ValueError:  # not the main thread (main() called from a library's worker thread)
        return {}


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def interruption(e: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and the exit code of a run ended by SIGTERM (143) or SIGINT (130), as a shell reports them."""
    return ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)


def _exit_now(signum, frame):
    line, code = interruption(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())
    os.write(2, f"bpcbench: {line}\n".encode())
    os._exit(code)


def exit_on_signals() -> None:
    """For the last moments of a run whose outputs are complete: a signal now exits at once with its
    code and line, instead of raising inside interpreter shutdown (a __del__ that frees llama.cpp
    objects, where an exception is printed as 'Exception ignored' and the exit code lost). Nothing
    is torn down in the handler: os._exit skips it all, and every output is already in place."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
