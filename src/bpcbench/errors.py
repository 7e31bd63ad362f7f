"""The exception types that the CLI turns into a one-line message and a non-zero exit (exit_code)."""


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
