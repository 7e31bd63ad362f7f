"""`make gpu-kit`: everything one GPU run needs, in folders that each fit one size-limited transfer.

    .venv/bin/python scripts/gpu_kit.py                 # build .gpu/ and print the size per call
    .venv/bin/python scripts/gpu_kit.py --check         # sizes again, with the working tree as it is now
    .venv/bin/python scripts/gpu_kit.py --models smollm2-135m    # a smaller kit: fewer calls
    .venv/bin/python scripts/gpu_kit.py --local-wheels DIR       # the same wheels for this Python (rehearsal)

The target is an offline GPU machine that takes files in size-limited transfers: each transfer
(a "call") brings the working tree plus one kit folder, at most 64 MiB in all, and runs one
command there. .gpu/ (ignored by git) gets one folder per call, .gpu/call-N, to be sent with
that call; call 1 holds src/ (the pinned llama-cpp-python trimmed to what CMake reads, tar.xz), whl/
(the wheels the image lacks, and bpcbench itself) and the first model parts; later calls hold
parts. Every folder also holds MODELS (name, sha256, bytes, parts, destination) and SHA256SUMS
(every part), which scripts/gpu-run.sh checks. .gpu/kit.json records the plan, .gpu/CALLS.md
the calls to make. Any call over 64 MiB (working tree included) is refused: one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_plan
import gpu_wheels
import pins
from gpu_plan import KitError, MiB

from bpcbench import defaults

ROOT = Path(__file__).resolve().parents[1]
LLAMA_VERSION = pins.exact_pin("llama-cpp-python")
SDIST = f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"
TRIMMED = f"llama_cpp_python-{LLAMA_VERSION}-trimmed.tar.xz"
CACHE = defaults.cache_root()
DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")
RUN_TIMEOUT_S = 570  # the run call: wait for the build, bench, ladder, cross-check


def log(msg: str) -> None:
    print(f"gpu-kit: {msg}", file=sys.stderr, flush=True)


def tree_bytes(root: Path = ROOT) -> int:
    """What travels with every call: tracked and untracked-not-ignored files, and shared/."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    files = {root / p for p in out.decode().split("\0") if p}
    shared = root / "shared"
    if shared.is_dir():
        files |= {p for p in shared.rglob("*") if p.is_file()}
    return sum(p.lstat().st_size for p in files if p.is_file() or p.is_symlink())


# -- the source ------------------------------------------------------------------------------


def fetch_sdist() -> Path:
    path = CACHE / "sdist" / SDIST
    if not path.is_file():
        log(f"downloading the llama-cpp-python {LLAMA_VERSION} sdist (77 MB)")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_VERSION}", "-d", str(path.parent)], check=True)
    return path


def trim_source(sdist: Path, dest: Path) -> Path:
    """The sdist less what no CMake build of the library reads, as tar.xz (cached by sdist mtime)."""
    out = dest / TRIMMED
    if out.is_file() and out.stat().st_mtime >= sdist.stat().st_mtime:
        return out
    dest.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(sdist) as src, tarfile.open(tmp, "w:xz", preset=9) as dst:
        for m in src.getmembers():
            rel = m.name.partition("/")[2]
            if rel and (m.isdir() or m.isfile()) and gpu_plan.keep_source(rel):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    tmp.replace(out)
    return out


def cmake_configure_check(trimmed: Path) -> None:
    """Configure (not build) the trimmed tree for the CPU: every file CMake reads is there."""
    if not shutil.which("cmake"):
        log("cmake not found here: the trimmed tree's CMake check is skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(trimmed) as t:
            t.extractall(tmp, filter="data")
        top = next(Path(tmp).iterdir())
        proc = subprocess.run(["cmake", "-S", str(top), "-B", str(top / "build"), "-DCMAKE_BUILD_TYPE=Release"],
                              capture_output=True, text=True)
    if proc.returncode:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
        raise KitError(f"the trimmed source does not configure: {' | '.join(errors[:3]) or proc.stderr[-300:]}")
    log("the trimmed source configures with CMake (CPU); the CUDA folders are all kept")


# -- wheels, the project, models ---------------------------------------------------------------


def build_wheels(dest: Path, python_version: str, carry: set[str], native: bool = False) -> None:
    image = gpu_wheels.image_packages(ROOT / "scripts" / "device-image-packages.txt")
    specs, notes = gpu_wheels.wanted(ROOT / "pyproject.toml", image, python_version, carry)
    for note in notes:
        log(note)
    gpu_wheels.download(specs, dest, python_version, native)
    gpu_wheels.closure(dest, image, python_version, native)
    for old in dest.glob("bpcbench-*.whl"):
        old.unlink()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise KitError(f"building the bpcbench wheel failed: {proc.stderr.strip().splitlines()[-1:]}")
    dup = gpu_wheels.duplicates(dest)
    if dup:
        raise KitError(f"two versions of one package in {dest}: {dup[0]} (delete one)")


def model_entries(names: list[str]) -> list[dict]:
    """name, path here, sha256, bytes and where gpu-run.sh puts it (site/<package>/… or cache/models/…)."""
    from bpcbench import models  # the venv's: resolves registry names, caches sha256

    out = []
    for name in names:
        _, path = models.resolve_path(name)
        known = models.KNOWN_MODELS.get(name)
        dest = f"site/{known.package}/{known.relpath}" if known and known.relpath else f"cache/models/{path.name}"
        out.append({"name": name, "path": str(path), "sha256": models.sha256_file(path),
                    "bytes": path.stat().st_size, "dest": dest})
    return out


# -- the kit -----------------------------------------------------------------------------------


def materialise(calls: list[gpu_plan.Call], stage: Path, entries: list[dict], kit: Path) -> None:
    """Fill .gpu/call-N: call 1's fixed files, every call's parts, MODELS and SHA256SUMS in each."""
    for old in kit.glob("call-*"):
        shutil.rmtree(old)
    paths = {e["name"]: e["path"] for e in entries}
    sums = []
    for call in calls:
        folder = ROOT / call.folder
        (folder / "parts").mkdir(parents=True)
        for name in call.files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (os.link(stage / name, folder / name) if _same_fs(stage, folder)
             else shutil.copy2(stage / name, folder / name))
        for part in call.parts:
            sums.append(f"{gpu_plan.write_part(paths[part.model], part, folder / 'parts' / part.name)}  {part.name}")
    nparts = {e["name"]: sum(1 for c in calls for p in c.parts if p.model == e["name"]) for e in entries}
    models_tsv = "".join(f"{e['name']}\t{e['sha256']}\t{e['bytes']}\t{nparts[e['name']]}\t{e['dest']}\n"
                         for e in entries)
    for call in calls:
        (ROOT / call.folder / "MODELS").write_text(models_tsv)
        (ROOT / call.folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.parent.stat().st_dev


def calls_markdown(calls: list[gpu_plan.Call]) -> str:
    """The calls to make, back to back (the build runs in the background between them)."""
    lines = ["# The calls for this kit, one transfer each (make them back to back)", ""]
    for c in calls:
        step = "build" if c.step.startswith("build") else c.step
        cmd = f"bash scripts/gpu-run.sh {step} {c.folder}"
        if c.step == "build+run":
            cmd += f" && bash scripts/gpu-run.sh run {c.folder}"
        timeout = RUN_TIMEOUT_S if c.step.endswith("run") else 120
        lines.append(f"{c.index}. send `{c.folder}` with the working tree ({c.carried / MiB:.1f} MiB), "
                     f"then run `{cmd}` (time limit {timeout} s)")
    return "\n".join(lines) + "\n"


def sized_on_disk(calls: list[tuple[int, str, str]]) -> list[gpu_plan.Call]:
    """(index, step, folder) -> Calls sized from the files on disk and the working tree as it is now."""
    tree = tree_bytes()
    out = []
    for index, step, rel in calls:
        folder = ROOT / rel
        if not folder.is_dir():
            raise KitError(f"{rel} is missing: run `make gpu-kit`")
        files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        out.append(gpu_plan.Call(index, step, files, tree_bytes=tree, kit=Path(rel).parent.as_posix()))
    return out


def carried_now(kit: Path) -> list[gpu_plan.Call]:
    """The calls of an existing kit, sized again."""
    if not (kit / "kit.json").is_file():
        raise KitError(f"no kit in {kit}: run `make gpu-kit`")
    plan = json.loads((kit / "kit.json").read_text())
    return sized_on_disk([(c["index"], c["step"], c["folder"]) for c in plan["calls"]])


def build(args: argparse.Namespace) -> list[gpu_plan.Call]:
    kit = ROOT / args.out
    stage = kit / "stage"
    t0 = time.monotonic()
    trimmed = trim_source(fetch_sdist(), stage / "src")
    if not args.no_cmake_check:
        cmake_configure_check(trimmed)
    build_wheels(stage / "whl", args.python_version, set(args.carry))
    entries = model_entries(args.models)
    fixed = {str(p.relative_to(stage)): p.stat().st_size
             for p in [trimmed, *sorted((stage / "whl").glob("*.whl"))]}
    calls = gpu_plan.plan_calls(fixed, {e["name"]: e["bytes"] for e in entries}, tree_bytes(),
                                margin=int(args.margin * MiB), kit=args.out)
    gpu_plan.check_plan(calls)
    materialise(calls, stage, entries, kit)
    calls = sized_on_disk([(c.index, c.step, c.folder) for c in calls])  # MODELS and SHA256SUMS too
    record = {"models": entries, "python_version": args.python_version, "limit_bytes": gpu_plan.LIMIT,
              "calls": [{"index": c.index, "step": c.step, "folder": c.folder, "carried_bytes": c.carried,
                         "files": c.files, "parts": [p.name for p in c.parts]} for c in calls]}
    (kit / "kit.json").write_text(json.dumps(record, indent=1))
    (kit / "CALLS.md").write_text(calls_markdown(calls))
    log(f"kit built in {time.monotonic() - t0:.0f} s")
    return calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".gpu", help="kit folder, relative to the repository (ignored by git)")
    p.add_argument("--models", type=lambda s: s.split(","), default=list(DEFAULT_MODELS))
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python version (default 3.12)")
    p.add_argument("--carry", action="append", default=[], help="carry this package even if the image has it")
    p.add_argument("--margin", type=float, default=gpu_plan.MARGIN / MiB, help="MiB kept free in each call")
    p.add_argument("--no-cmake-check", action="store_true", help="skip configuring the trimmed source here")
    p.add_argument("--check", action="store_true", help="only size the existing kit's calls again")
    p.add_argument("--local-wheels", metavar="DIR", help="download the same wheels for this Python into DIR")
    args = p.parse_args(argv)
    try:
        if args.local_wheels:
            build_wheels(Path(args.local_wheels), f"{sys.version_info[0]}.{sys.version_info[1]}",
                         set(args.carry), native=True)
            return 0
        calls = carried_now(ROOT / args.out) if args.check else build(args)
        gpu_plan.check_plan(calls)
    except (KitError, RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        print(f"gpu-kit: error: {exc}", file=sys.stderr)
        return 1
    print(gpu_plan.plan_table(calls))
    total = sum(c.payload for c in calls)
    print(f"{len(calls)} calls, {total / MiB:.1f} MiB of kit; the calls: {args.out}/CALLS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
