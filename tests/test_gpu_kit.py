"""The GPU kit (scripts/gpu_kit.py, gpu_plan.py, gpu_wheels.py, gpu-run.sh) and the GPU matrices.

Fast: no network, no compiler, no model; the device side is checked as far as bash can run
it here (checksums of stashed parts, the refusal to run without a build).
"""

from __future__ import annotations

import doctest
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bpcbench.bench import matrix

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_kit  # noqa: E402
import gpu_plan  # noqa: E402
import gpu_wheels  # noqa: E402
from gpu_plan import LIMIT, PART_MAX, KitError, MiB  # noqa: E402

RUN_SH = REPO / "scripts" / "gpu-run.sh"
LLAMA_MAX_SEQ = 256  # llama.cpp refuses a context with more sequences ("n_seq_max must be <= 256")
# What `make gpu-kit` measured: source 2.4 MB, wheels 11.9 MB, the two models, a 3.1 MiB tree.
KIT_SIZES = {"src/llama.tar.xz": 2_564_000, "whl/all.whl": 12_500_000}
MODEL_SIZES = {"smollm2-135m": 98_362_432, "gemma3-270m": 253_113_024}


def test_the_doctests_of_the_scripts_pass():
    for module in (gpu_plan, gpu_wheels):
        assert doctest.testmod(module).failed == 0


# -- planning ---------------------------------------------------------------------------------


def _check_calls(calls, fixed, models, limit=LIMIT, part_max=PART_MAX):
    assert all(c.carried <= limit for c in calls), gpu_plan.plan_table(calls)
    assert calls[0].files == fixed and all(not c.files for c in calls[1:])
    for name, size in models.items():
        parts = [p for c in calls for p in c.parts if p.model == name]
        assert [p.index for p in parts] == list(range(len(parts)))
        assert sum(p.size for p in parts) == size
        assert all(0 < p.size <= part_max for p in parts)
        assert all(a.offset + a.size == b.offset for a, b in zip(parts, parts[1:]))
    gpu_plan.check_plan(calls, limit, part_max)


def test_the_measured_kit_takes_six_calls_each_under_the_limit():
    calls = gpu_plan.plan_calls(KIT_SIZES, MODEL_SIZES, tree_bytes=int(3.2 * MiB))
    _check_calls(calls, KIT_SIZES, MODEL_SIZES)
    assert [c.step for c in calls] == ["build", "stash", "stash", "stash", "stash", "run"]
    assert [c.folder for c in calls] == [f".gpu/call-{i}" for i in range(1, 7)]


def test_random_sizes_always_plan_under_the_limit_in_the_fewest_calls():
    rng = random.Random(14)
    for _ in range(300):
        tree = rng.randrange(0, 20 * MiB)
        room = LIMIT - tree - gpu_plan.MARGIN
        fixed = {f"f{i}": rng.randrange(1, room // 4) for i in range(rng.randrange(0, 4))}
        models = {f"m{i}": rng.randrange(1, 400 * MiB) for i in range(rng.randrange(1, 4))}
        calls = gpu_plan.plan_calls(fixed, models, tree)
        _check_calls(calls, fixed, models)
        total = sum(fixed.values()) + sum(models.values())
        assert len(calls) <= -(-total // room) + 1  # at most one call lost to the 1 MiB rule
        assert calls[-1].step in ("run", "build+run")


def test_a_kit_whose_first_call_cannot_fit_is_refused():
    with pytest.raises(KitError, match="call 1 would carry"):
        gpu_plan.plan_calls({"whl/numpy.whl": 61 * MiB}, MODEL_SIZES, tree_bytes=2 * MiB)
    with pytest.raises(KitError, match="leaves no room"):
        gpu_plan.plan_calls({}, MODEL_SIZES, tree_bytes=63 * MiB)
    too_big = gpu_plan.Call(3, "stash", {"x": 62 * MiB}, tree_bytes=3 * MiB)
    with pytest.raises(KitError, match="call 3 would carry 65.0 MiB, over 64 MiB"):
        gpu_plan.check_plan([too_big])


def test_the_calls_to_make_name_their_folder_and_fit_the_device_limits():
    calls = gpu_plan.plan_calls(KIT_SIZES, MODEL_SIZES, tree_bytes=3 * MiB)
    text = gpu_kit.calls_markdown(calls)
    lines = [line for line in text.splitlines() if " then run " in line]
    assert len(lines) == len(calls)
    assert lines[0].startswith("1. send `.gpu/call-1` with the working tree (")
    assert "`bash scripts/gpu-run.sh build .gpu/call-1`" in lines[0]
    assert "gpu-run.sh run .gpu/call-6" in lines[-1] and f"(time limit {gpu_kit.RUN_TIMEOUT_S} s)" in lines[-1]
    assert gpu_kit.RUN_TIMEOUT_S <= 600


# -- model parts ------------------------------------------------------------------------------


def test_model_parts_reassemble_to_the_models_sha256(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + random.Random(1).randbytes(int(2.7 * MiB)))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    calls = gpu_plan.plan_calls({"src.tar.xz": MiB // 2}, {"m": model.stat().st_size}, tree_bytes=0,
                                limit=2 * MiB, margin=0, part_max=MiB, min_part=1)
    parts = [p for c in calls for p in c.parts]
    assert len(parts) >= 3 and all(p.size <= MiB for p in parts)
    paths = []
    for p in parts:
        paths.append(tmp_path / p.name)
        assert gpu_plan.write_part(model, p, paths[-1]) == hashlib.sha256(paths[-1].read_bytes()).hexdigest()
    gpu_plan.assemble(paths, tmp_path / "again.gguf", sha)
    assert (tmp_path / "again.gguf").read_bytes() == model.read_bytes()
    with pytest.raises(KitError, match="assembled sha256"):
        gpu_plan.assemble(paths[1:], tmp_path / "short.gguf", sha)
    assert not (tmp_path / "short.gguf").exists()


# -- the trimmed source and the wheels ----------------------------------------------------------


@pytest.mark.parametrize("rel, kept", [
    ("CMakeLists.txt", True), ("pyproject.toml", True), ("llama_cpp/llama_cpp.py", True),
    ("vendor/llama.cpp/ggml/src/ggml-cuda/mmq.cu", True),
    ("vendor/llama.cpp/ggml/src/ggml-cuda/template-instances/generate_cu_files.py", True),
    ("vendor/llama.cpp/ggml/src/ggml-cpu/CMakeLists.txt", True),
    ("vendor/llama.cpp/tools/mtmd/clip.cpp", True), ("vendor/llama.cpp/vendor/miniaudio/miniaudio.h", True),
    ("vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf", False), ("vendor/llama.cpp/docs/build.md", False),
    ("vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp", False),
    ("vendor/llama.cpp/tools/server/server.cpp", False),
    ("vendor/llama.cpp/convert_hf_to_gguf.py", False), (".git/modules/vendor/llama.cpp/index", False),
    ("vendor/llama.cpp/tools/mtmd/test-3.mp4", False), ("examples/high_level_api/fastapi_server.py", False),
])
def test_the_source_trim_keeps_what_cmake_reads(rel, kept):
    assert gpu_plan.keep_source(rel) is kept


def _fake_wheel(folder: Path, name: str, requires: list[str]) -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n".format(name)
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta)
    return path


def test_the_wheels_carry_what_the_image_lacks_and_their_needs_are_checked(tmp_path):
    image = gpu_wheels.image_packages(REPO / "scripts" / "device-image-packages.txt")
    assert {"numpy", "pandas", "matplotlib", "tqdm", "sacrebleu", "jinja2", "scikit-build-core"} <= image
    specs, notes = gpu_wheels.wanted(REPO / "pyproject.toml", image, "3.12", carry=set())
    names = {gpu_wheels.normalise(s.split("=")[0].split(">")[0]) for s in specs}
    assert {"constriction", "gguf", "zstandard", "brotli", "rapidfuzz", "diskcache"} <= names
    assert not names & {"numpy", "pandas", "llama-cpp-python"}
    assert any(n.startswith("numpy: pinned") for n in notes)
    _fake_wheel(tmp_path, "gguf", ["numpy>=1.17", "pyyaml>=5.1", "PySide6; extra == 'gui'"])
    _fake_wheel(tmp_path, "odd", ["left-out>=1", "tomli; python_version < '3.11'"])
    assert list(gpu_wheels.missing(tmp_path, image, "3.12")) == ["left-out"]
    _fake_wheel(tmp_path, "left_out", [])
    assert not gpu_wheels.missing(tmp_path, image, "3.12")
    assert not gpu_wheels.duplicates(tmp_path)


# -- the matrices -----------------------------------------------------------------------------


def _lanes(name: str) -> dict:
    """(model codec, corpus) -> (width, measure, n_gpu_layers) of a shipped matrix's model cells."""
    return {(c.codec, c.corpus): (c.width, c.measure, c.n_gpu_layers) for c in matrix.load(name).cells if c.is_llm}


def test_the_gpu_matrix_codes_both_models_at_every_lane_count_on_the_gpu():
    cells = _lanes("gpu")
    models = {codec for codec, _ in cells}
    assert models == {"llm:smollm2-135m", "llm:gemma3-270m"}
    for model in models:
        widths = sorted(w for (codec, _), (w, _, _) in cells.items() if codec == model)
        assert widths == [1, 32, 128, 256]
    assert {corpus for _, corpus in cells} == {"alice29", "asyoulik", "lcet10", "plrabn12"}
    assert {(m, ngl) for _, m, ngl in cells.values()} == {("coded", 99)}
    assert max(w for w, _, _ in cells.values()) <= LLAMA_MAX_SEQ


def test_the_rehearsal_matrix_mirrors_the_gpu_matrix():
    assert _lanes("gpu-rehearsal") == _lanes("gpu")
    assert all(c.max_bytes and c.max_bytes <= 2000 for c in matrix.load("gpu-rehearsal").cells)


# -- gpu-run.sh, as far as bash runs it here ------------------------------------------------------


@pytest.fixture
def call_dir(tmp_path):
    call = tmp_path / "call-6"
    (call / "parts").mkdir(parents=True)
    data = b"part bytes"
    (call / "parts" / "m.part00").write_bytes(data)
    (call / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  m.part00\n")
    (call / "MODELS").write_text(f"m\t{hashlib.sha256(data).hexdigest()}\t{len(data)}\t1\tcache/models/m.gguf\n")
    return call


def _run_sh(tmp_path, *args, **env):
    full = {**os.environ, "BPC_TMP": str(tmp_path / "machine"), "OUT": str(tmp_path / "out"),
            "PY": sys.executable, **env}
    return subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, env=full, timeout=60)


needs_tools = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("sha256sum")), reason="bash, coreutils")


@needs_tools
def test_run_refuses_to_start_without_a_build(tmp_path, call_dir):
    proc = _run_sh(tmp_path, "run", str(call_dir))
    assert proc.returncode == 3, proc.stderr
    assert "no llama-cpp-python build here" in proc.stderr
    assert "stashed: m.part00" in proc.stderr  # the parts it brought are kept for the next try
    assert not (tmp_path / "out").exists()


@needs_tools
def test_run_refuses_a_failed_build(tmp_path, call_dir):
    (tmp_path / "machine" / "bpc-build").mkdir(parents=True)
    (tmp_path / "machine" / "bpc-build" / "state").write_text("failed\n")
    (tmp_path / "machine" / "bpc-build" / "build.log").write_text("nvcc fatal: something\n")
    proc = _run_sh(tmp_path, "run", str(call_dir))
    assert proc.returncode == 3 and "build failed" in proc.stderr and "nvcc fatal" in proc.stderr


@needs_tools
def test_stash_refuses_a_corrupt_part_and_logs_its_time(tmp_path, call_dir):
    proc = _run_sh(tmp_path, "stash", str(call_dir))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "machine" / "bpc-stash" / "m.part00").read_bytes() == b"part bytes"
    assert "stash: " in proc.stderr and " s (exit 0)" in proc.stderr
    (call_dir / "parts" / "m.part00").write_bytes(b"part bytez")
    proc = _run_sh(tmp_path, "stash", str(call_dir))
    assert proc.returncode == 3 and "do not match SHA256SUMS" in proc.stderr


@needs_tools
def test_usage_errors_are_one_line(tmp_path):
    proc = _run_sh(tmp_path, "launch", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage:" in proc.stderr


@needs_tools
def test_a_repeated_build_call_leaves_a_running_or_finished_build_alone(tmp_path, call_dir):
    build = tmp_path / "machine" / "bpc-build"
    build.mkdir(parents=True)
    (build / "state").write_text("ok\n")
    proc = _run_sh(tmp_path, "build", str(call_dir))
    assert proc.returncode == 0, proc.stderr
    assert "build: ok" in proc.stderr and "wheels ->" not in proc.stderr


def test_the_run_folder_is_named_by_bpcbenchs_own_run_id_rule():
    script = (REPO / "scripts" / "gpu-run.sh").read_text()
    assert "-m bpcbench.defaults run-id gpu" in script and "%Y%m%d" not in script
    out = subprocess.run([sys.executable, "-m", "bpcbench.defaults", "run-id", "gpu"], capture_output=True,
                         text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src"))).stdout.strip()
    assert re.fullmatch(r"\d{8}T\d{6}Z-gpu", out)
