"""The GPU kit's pure parts: which calls carry what, cutting and checking model files.

An offline GPU machine that takes files in size-limited transfers (64 MiB per call, the working
tree included) cannot receive the run in one go, so the kit is planned as a few calls: call 1
carries the llama-cpp-python source, the wheels and as many model bytes as fit; the next calls
carry the rest of the model bytes; the last one also runs the bench. `plan_calls` cuts every
model into parts that fill each call (no part over `part_max`), so the number of calls is the
least the sizes allow. Nothing here touches the network or compiles; `gpu_kit.py` does the
downloads and `gpu-run.sh` the device side.

>>> calls = plan_calls({"src.tar.xz": 10 * MiB}, {"m": 100 * MiB}, tree_bytes=3 * MiB)
>>> [(c.step, round(c.carried / MiB)) for c in calls]
[('build', 62), ('run', 54)]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MiB = 1 << 20
LIMIT = 64 * MiB  # what one transfer (call) to the machine may carry, working tree included
PART_MAX = 60 * MiB  # the largest model part
MARGIN = 2 * MiB  # room for the working tree to grow between `make gpu-kit` and the calls
MIN_PART = 1 * MiB  # a call with less room than this left starts the next call instead


class KitError(Exception):
    """One line for the user; the kit builder exits non-zero with it."""


@dataclass
class Part:
    model: str  # the model's kit name, e.g. "smollm2-135m"
    index: int
    offset: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.model}.part{self.index:02d}"


@dataclass
class Call:
    index: int  # 1-based
    step: str  # build | stash | run | build+run
    files: dict[str, int] = field(default_factory=dict)  # name inside the call folder -> bytes
    parts: list[Part] = field(default_factory=list)
    tree_bytes: int = 0
    kit: str = ".gpu"  # the kit folder, relative to the repository

    @property
    def folder(self) -> str:
        return f"{self.kit}/call-{self.index}"

    @property
    def payload(self) -> int:
        return sum(self.files.values()) + sum(p.size for p in self.parts)

    @property
    def carried(self) -> int:
        """What the call sends: the working tree plus its carried folder."""
        return self.tree_bytes + self.payload


def plan_calls(fixed: dict[str, int], models: dict[str, int], tree_bytes: int, *, limit: int = LIMIT,
               margin: int = MARGIN, part_max: int = PART_MAX, min_part: int = MIN_PART,
               kit: str = ".gpu") -> list[Call]:
    """Calls that carry `fixed` (call 1) and then every model's bytes, in order, cut to fit.

    Raises KitError when call 1 cannot hold the fixed files."""
    room = limit - tree_bytes - margin
    if room < min_part:
        raise KitError(f"the working tree ({tree_bytes / MiB:.1f} MiB) leaves no room under {limit / MiB:.0f} MiB")
    if sum(fixed.values()) > room:
        raise KitError(f"call 1 would carry {(tree_bytes + sum(fixed.values())) / MiB:.1f} MiB "
                       f"(working tree + source + wheels), over {limit / MiB:.0f} MiB "
                       f"less {margin / MiB:.0f} MiB margin")
    calls = [Call(1, "build", dict(fixed), tree_bytes=tree_bytes, kit=kit)]
    for model, size in models.items():
        offset, index = 0, 0
        while offset < size:
            free = room - calls[-1].payload
            if free < min(min_part, size - offset):
                calls.append(Call(len(calls) + 1, "stash", tree_bytes=tree_bytes, kit=kit))
                free = room
            n = min(part_max, free, size - offset)
            calls[-1].parts.append(Part(model, index, offset, n))
            offset, index = offset + n, index + 1
    calls[-1].step = "build+run" if len(calls) == 1 else "run"
    return calls


def check_plan(calls: list[Call], limit: int = LIMIT, part_max: int = PART_MAX) -> None:
    """KitError naming the first call over the limit or the first part over part_max."""
    for call in calls:
        if call.carried > limit:
            raise KitError(f"call {call.index} would carry {call.carried / MiB:.1f} MiB, over {limit / MiB:.0f} MiB")
        for part in call.parts:
            if part.size > part_max:
                raise KitError(f"{part.name} is {part.size / MiB:.1f} MiB, over {part_max / MiB:.0f} MiB")


def plan_table(calls: list[Call]) -> str:
    """One line per call: what it carries and how much, for the kit builder's output."""
    lines = []
    for c in calls:
        groups: dict[str, list[int]] = {}
        for name, size in list(c.files.items()) + [(f"parts/{p.name}", p.size) for p in c.parts]:
            top, _, rest = name.partition("/")
            key = name if top == "parts" or not rest else top + "/"
            groups.setdefault(key, []).append(size)
        what = ", ".join(f"{k} {sum(v) / MiB:.1f}" + (f" ({len(v)} files)" if len(v) > 1 else "")
                         for k, v in groups.items() if sum(v) >= MiB // 10)
        lines.append(f"call {c.index} ({c.step}) carries {c.carried / MiB:.2f} MiB = tree {c.tree_bytes / MiB:.2f}"
                     f" + {c.folder} {c.payload / MiB:.2f}: {what or '-'}")
    return "\n".join(lines)


# -- model files -------------------------------------------------------------------------


def sha256_file(path: str | Path, chunk: int = 4 * MiB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_part(model_path: str | Path, part: Part, dest: str | Path, chunk: int = 4 * MiB) -> str:
    """Copy one part's bytes of the model into dest; returns the part's sha256."""
    h = hashlib.sha256()
    with open(model_path, "rb") as src, open(dest, "wb") as out:
        src.seek(part.offset)
        left = part.size
        while left:
            block = src.read(min(chunk, left))
            if not block:
                raise KitError(f"{model_path}: file ended before byte {part.offset + part.size}")
            h.update(block)
            out.write(block)
            left -= len(block)
    return h.hexdigest()


def assemble(parts: list[Path], dest: Path, expected_sha256: str) -> None:
    """Concatenate parts into dest and check the whole file's sha256 (the device does the same in bash)."""
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for p in parts:
            data = Path(p).read_bytes()
            h.update(data)
            out.write(data)
    if h.hexdigest() != expected_sha256:
        dest.unlink()
        raise KitError(f"{dest.name}: assembled sha256 {h.hexdigest()[:12]}… != {expected_sha256[:12]}…")


# -- the trimmed llama-cpp-python source -----------------------------------------------------

# Relative to the sdist's top folder. Nothing CMake reads for a CPU or CUDA build of the
# library: with llama.cpp added as a subdirectory its tests, tools, examples and app are off
# (LLAMA_STANDALONE is false), and a ggml backend folder is read only when its option is on.
# tools/mtmd stays: llama-cpp-python's CMakeLists adds it (LLAVA_BUILD, on by default).
_LLAMA = "vendor/llama.cpp"
DROP_DIRS = (
    ".git", "docs", "examples", "tests", "docker", ".github",
    *(f"{_LLAMA}/{d}" for d in ("models", "docs", "media", "gguf-py", "conversion", "benches", "tests",
                                "examples", "pocs", "scripts", "app", "skills", "requirements", "ci",
                                ".devops", ".github", ".gemini", ".pi", "grammars")),
    *(f"{_LLAMA}/ggml/src/ggml-{b}" for b in ("vulkan", "sycl", "opencl", "metal", "hexagon", "et", "openvino",
                                                "webgpu", "cann", "virtgpu", "zdnn", "zendnn", "musa", "hip")),
)
KEEP_TOOLS = {"mtmd", "CMakeLists.txt"}
_DROP_FILES = re.compile(r"\.(py|md|sh|ipynb|png|jpe?g|gif|mp[34]|wav|gguf)$")
_KEEP_PY_UNDER = ("llama_cpp/", f"{_LLAMA}/ggml/src/ggml-cuda/", f"{_LLAMA}/ggml/src/ggml-cpu/")


def keep_source(rel: str) -> bool:
    """Whether a file of the sdist (path relative to its top folder) goes into the kit."""
    path = PurePosixPath(rel)
    text = path.as_posix()
    if any(text == d or text.startswith(d + "/") for d in DROP_DIRS):
        return False
    if text.startswith(f"{_LLAMA}/tools/") and path.parts[3] not in KEEP_TOOLS:
        return False
    if path.name in ("CMakeLists.txt", "LICENSE", "LICENSE.md", "pyproject.toml", "PKG-INFO", "README.md"):
        return True
    if _DROP_FILES.search(path.name) and not text.startswith(_KEEP_PY_UNDER):
        return False  # the converters, docs and scripts; ggml-cuda's and ggml-cpu's generators stay
    return True


def cmake_subdirs(cmake_text: str) -> list[str]:
    """The literal add_subdirectory(...) targets of one CMakeLists.txt (variables skipped)."""
    found = re.findall(r"^\s*add_subdirectory\s*\(\s*([^\s)]+)", cmake_text, flags=re.M)
    return [d for d in found if "${" not in d]
