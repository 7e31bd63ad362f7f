"""The architecture, checked: who may talk to llama.cpp, module and function sizes, the module map in docs/design.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "bpcbench"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)

# ctypes outside llama/: baselines.py asks libbz2 and liblzma for their own version strings,
# which Python's bz2 and lzma modules do not expose (a row must name the library that coded it).
CTYPES_ALSO_IN = {"baselines.py"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = re.compile(r"#\s*long:", re.I)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_only_llama_package_touches_llama_cpp_and_ctypes(path):
    roots = _imported_roots(ast.parse(path.read_text()))
    if _rel(path).startswith("llama/"):
        return
    assert "llama_cpp" not in roots, f"{_rel(path)} imports llama_cpp: go through bpcbench.llama"
    if _rel(path) not in CTYPES_ALSO_IN:
        assert "ctypes" not in roots, f"{_rel(path)} imports ctypes: go through bpcbench.llama"


def test_the_boundary_test_sees_an_import():
    assert _imported_roots(ast.parse("import llama_cpp as ll\nfrom ctypes import c_int")) == {"llama_cpp", "ctypes"}


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{_rel(path)} has {len(lines)} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                head = "\n".join(lines[node.lineno - 1 : node.lineno + 3])
                assert LONG_REASON.search(head), (
                    f"{_rel(path)}:{node.lineno} {node.name} is {length} lines; split it or say why "
                    f"in a '# long: …' comment on its first lines")


def test_design_module_table_matches_the_tree():
    design = (REPO / "docs" / "design.md").read_text()
    table = design[design.index("| step | module"):]
    table = table[: table.index("\n\n")]
    named = set(re.findall(r"`([\w/]+\.py)`", table))
    on_disk = {_rel(p) for p in MODULES if p.name not in ("__init__.py", "__main__.py")}
    assert named - on_disk == set(), "docs/design.md names modules that do not exist"
    assert on_disk - named == set(), "modules missing from the module table in docs/design.md"


def test_test_modules_have_unique_names():
    """tests/ has no __init__.py files, so pytest imports each test module by its base name: two of
    one name fail collection in a fresh clone (tests/report/test_split.py once did)."""
    tests = Path(__file__).resolve().parent
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_relative_links_in_the_docs_resolve():
    """Every relative link of the README, docs/ and the package's own READMEs names a file that exists."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(PACKAGE.rglob("*.md"))]
    broken = [(page.name, target) for page in pages for target in link.findall(page.read_text())
              if not re.match(r"[a-z]+:|#", target) and not (page.parent / target.split("#")[0]).exists()]
    assert len(pages) > 5 and broken == []
