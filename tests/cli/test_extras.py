"""The package's extras: compress, decompress and models run on the core set, and a command whose
extra is missing is refused with one line naming the pip command (bpcbench.cli.extras).

The optional modules are hidden from a subprocess by a meta-path finder that refuses them, as
on an install without the extra; nothing else about the environment changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bpcbench.cli import build_parser, extras, main

REPO = Path(__file__).resolve().parents[2]
OPTIONAL = sorted(m for modules in extras.EXTRA_MODULES.values() for m in modules)
CORE_COMMANDS = {"compress", "decompress", "models", "corpora", "cache"}
ARGS = ["--context", "16", "--width", "8", "--threads", "1", "-q"]

HIDDEN_RUN = """
import sys
from importlib.abc import MetaPathFinder

HIDDEN = set(sys.argv[1].split(","))


class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, Hide())
from bpcbench.cli import main

rc = main(sys.argv[2:])
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN)
if leaked:
    sys.exit(f"imported although hidden: {leaked}")
sys.exit(rc)
"""


def run_hidden(hidden: list[str], *argv, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", HIDDEN_RUN, ",".join(hidden), *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_compress_decompress_and_models_run_without_any_extra(tmp_path, tiny_model_path):
    src = tmp_path / "in.txt"
    src.write_bytes("core set only: no pandas, no scipy, no tqdm, no brotli. ".encode() * 8)
    p = run_hidden(OPTIONAL, "compress", src, "-m", tiny_model_path, "--stats", *ARGS, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "bits/byte: ideal" in p.stderr
    p = run_hidden(OPTIONAL, "decompress", f"{src}.bpcz", "-o", tmp_path / "out.txt", "-m", tiny_model_path,
                   "-t", "1", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.txt").read_bytes() == src.read_bytes()
    p = run_hidden(OPTIONAL, "models", tiny_model_path, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "sha256" in p.stdout


def test_cache_ls_and_clear_run_without_any_extra(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "cells").mkdir(parents=True)
    (cache / "cells" / "k.json").write_text("{}")
    monkeypatch.setenv("BPCBENCH_CACHE", str(cache))
    p = run_hidden(OPTIONAL, "cache", "ls", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "cells" in p.stdout
    p = run_hidden(OPTIONAL, "cache", "clear", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (cache / "cells" / "k.json").exists()


def test_a_command_without_its_extra_says_which_pip_line_in_one_line(tmp_path):
    p = run_hidden(["pandas"], "bench", "--quick", cwd=tmp_path)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == ("bpcbench: error: bench needs the bench extra (no module pandas): "
                        "pip install 'bpcbench[bench]'\n")


# the smallest argv each refused command parses with; the check runs before any of it is read
REFUSED_ARGV = {
    "bench": ["bench", "--quick"], "report": ["report", "run"], "compare": ["compare", "a", "b"],
    "merge": ["merge", "--out", "m", "s1"], "nightly": ["nightly"], "ladder": ["ladder"],
    "lossy": ["lossy", "alice29"],
}


@pytest.mark.parametrize("command", sorted(REFUSED_ARGV))
def test_every_command_with_an_extra_is_refused_before_it_starts(command, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(extras, "_importable", lambda module: False)
    assert main(REFUSED_ARGV[command]) == 2
    err = capsys.readouterr().err
    needed = extras.COMMAND_EXTRAS[command]
    assert err == (f"bpcbench: error: {command} needs the {' and '.join(needed)} extra{'s' * (len(needed) > 1)} "
                   f"(no module {', '.join(m for e in needed for m in extras.EXTRA_MODULES[e])}): "
                   f"pip install 'bpcbench[{','.join(needed)}]'\n")
    assert list(tmp_path.iterdir()) == []


def test_lossy_with_the_bench_extra_names_only_the_lossy_one(monkeypatch, capsys):
    monkeypatch.setattr(extras, "_importable", lambda module: module not in extras.EXTRA_MODULES["lossy"])
    assert main(["lossy", "alice29"]) == 2
    assert capsys.readouterr().err.endswith("(no module rapidfuzz, sacrebleu): pip install 'bpcbench[lossy]'\n")


def test_every_command_is_core_or_names_its_extra():
    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    assert set(sub.choices) == CORE_COMMANDS | set(extras.COMMAND_EXTRAS)
    assert not CORE_COMMANDS & set(extras.COMMAND_EXTRAS)
    assert set(REFUSED_ARGV) == set(extras.COMMAND_EXTRAS)


def _names(requirements: list[str]) -> list[str]:
    return sorted(re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in requirements)


def test_the_extras_table_installs_what_pyproject_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]
    for extra, modules in extras.EXTRA_MODULES.items():
        assert _names(declared[extra]) == sorted(modules), extra  # import names are the PyPI names here
    assert declared["all"] == [f"bpcbench[{','.join(sorted(extras.EXTRA_MODULES))}]"]
    assert not set(_names(project["dependencies"])) & set(OPTIONAL)


def test_the_optional_modules_exist_here():
    """The test environment installs every extra: a misspelt module name would pass the table test."""
    assert [m for m in OPTIONAL if not extras._importable(m)] == []
