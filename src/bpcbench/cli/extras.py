"""Which command needs which optional extra of the package, and the one line that says so.

The core install (`pip install bpcbench`) runs compress, decompress, models, corpora and cache; the
other commands need the extras named here (pyproject.toml's [project.optional-dependencies],
which tests/cli/test_extras.py keeps in step with EXTRA_MODULES). The check runs before the
command does: a bench would otherwise stop at its first plot, minutes in.
"""

from __future__ import annotations

import importlib.util

from bpcbench.errors import BpcError

# extra -> the modules it installs (import names)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "bench": ("pandas", "matplotlib", "scipy", "tqdm", "brotli"),
    "lossy": ("rapidfuzz", "sacrebleu"),
}
# command -> the extras it imports; a command not listed runs on the core set
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "bench": ("bench",),
    "report": ("bench",),
    "compare": ("bench",),
    "merge": ("bench",),
    "nightly": ("bench",),
    "ladder": ("bench",),
    "lossy": ("bench", "lossy"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a broken half-import
        return False


def missing(command: str) -> dict[str, list[str]]:
    """The extras `command` needs that are not installed, each with its modules that are missing."""
    out = {}
    for extra in COMMAND_EXTRAS.get(command, ()):
        absent = [m for m in EXTRA_MODULES[extra] if not _importable(m)]
        if absent:
            out[extra] = absent
    return out


def require(command: str) -> None:
    """Raise the one-line BpcError (exit 2) that names the pip command, if an extra is missing.

    >>> require("compress")  # the core set: nothing to check
    """
    absent = missing(command)
    if not absent:
        return
    names = list(absent)
    modules = ", ".join(m for ms in absent.values() for m in ms)
    raise BpcError(f"{command} needs the {' and '.join(names)} extra{'s' if len(names) > 1 else ''} "
                   f"(no module {modules}): pip install 'bpcbench[{','.join(names)}]'")
