"""Files made by an earlier bpcbench (tests/data/codec-<version>, see codec_fixtures.py) still decode,
and their inputs still code to the same bytes, wherever the build and model are those that made them.

codec-0.3.0 was made before the compiled kernel (codec/kernel.py), whose build is part of the
fingerprint: its model and lossy files are refused (exit 4) by every build since; codec-0.4.0 was
made with the kernel's first build (bpcbench-kernel/1) and is refused in turn by its second, which
made codec-0.4.0-kernel2; codec-0.4.0-lossy2 with kernel/2 and the second lossy coding (flags priced
by the model, #24), which is in a lossy file's fingerprint: the lossy files of the three before it are
refused (exit 4) everywhere, with a line naming the first lossy coding where the rest of the build is
the same (kernel2's).

On another build (a different CPU, llama.cpp or numpy: another codec fingerprint) or model file,
the decoder must refuse a model-coded file with exit code 4 (Mismatch) instead, so the test can
fail either way. Stored and zstd files need no model and decode everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from codec_fixtures import CASES, here, make

from bpcbench.cli import main
from bpcbench.codec.container import CODED, Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings

ROOT = Path(__file__).parents[1] / "data"
VERSIONS = ("codec-0.3.0", "codec-0.4.0", "codec-0.4.0-kernel2", "codec-0.4.0-lossy2")
LOSSY_V1 = ("codec-0.3.0", "codec-0.4.0", "codec-0.4.0-kernel2")  # the first lossy coding's: never decoded
MANIFESTS = {v: json.loads((ROOT / v / "manifest.json").read_text()) for v in VERSIONS}
FILES = [(v, name) for v in VERSIONS for name in sorted(MANIFESTS[v])]


@pytest.fixture(scope="module")
def made_here(tiny_session):
    return here(tiny_session)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_case_has_its_file(version):
    data, manifest = ROOT / version, MANIFESTS[version]
    assert sorted(manifest) == sorted(CASES)
    assert {m["method"] for m in manifest.values()} == {"model", "lossy", "zstd", "stored"}
    assert Container.from_bytes((data / "segments.bpcz").read_bytes()).header.lane_methods
    assert not Container.from_bytes((data / "model-reeval.bpcz").read_bytes()).header.shift


@pytest.mark.parametrize("version, name", FILES)
def test_an_earlier_file_decodes_byte_exact_or_is_refused(tmp_path, capsys, tiny_session, tiny_model_path,
                                                          made_here, version, name):
    data = ROOT / version
    case, blob = MANIFESTS[version][name], (data / f"{name}.bpcz").read_bytes()
    same_build = (case["codec"], case["model_sha"]) == made_here
    old_lossy = case["method"] == "lossy" and version in LOSSY_V1
    if case["method"] in CODED and (not same_build or old_lossy):
        out = tmp_path / "out"
        (tmp_path / "f.bpcz").write_bytes(blob)
        assert main(["decompress", str(tmp_path / "f.bpcz"), "-o", str(out), "-m", str(tiny_model_path),
                     "-t", "1", "-q"]) == 4
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and ("mismatch" in err or "differ" in err
                                                       or "first lossy coding" in err), err
        assert not same_build or "first lossy coding" in err, err
        assert not out.exists()
        return
    decoded, _ = decompress(blob, tiny_session, settings=Settings(**case["settings"]))
    assert decoded == (data / f"{name}.out").read_bytes()


@pytest.mark.parametrize("version, name", FILES)
def test_its_input_codes_to_the_same_bytes(tiny_session, made_here, version, name):
    data = ROOT / version
    case = MANIFESTS[version][name]
    if (case["codec"], case["model_sha"]) != made_here:
        pytest.skip(f"made under codec {case['codec']}, model {case['model_sha']}; here {made_here}")
    if case["method"] == "lossy" and version in LOSSY_V1:
        again = make(tiny_session, (data / f"{name}.in").read_bytes(), CASES[name])
        assert again != (data / f"{name}.bpcz").read_bytes()
        return  # the lossy coding changed (#24): the same input codes to another file
    assert make(tiny_session, (data / f"{name}.in").read_bytes(), CASES[name]) == (data / f"{name}.bpcz").read_bytes()
