"""What every CLI test checks the same way: main() called with any argument types, and an error
that is exactly one line and no traceback."""

from __future__ import annotations

from bpcbench.cli import main


def run(*argv) -> int:
    return main([str(a) for a in argv])


def one_line(err: str) -> str:
    """The one non-blank line of `err` (a failing assertion if there are more, or a traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
