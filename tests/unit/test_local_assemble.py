"""Joining model chunks out of package archives, and the checks on the result."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest

from latm.local import assemble as asm
from latm.local.paths import LocalError

CHUNKS = [b"GGUF" + bytes(range(256)) * 5, b"middle" * 1000, b"tail-bytes"]
WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()


def make_wheel(directory: Path, name: str, version: str, payload: bytes, bins: int = 1) -> Path:
    norm = name.replace("-", "_")
    path = directory / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{norm}/__init__.py", "raise SystemExit('never imported')\n")
        for i in range(bins):
            zf.writestr(f"{norm}/data/part{i + 1:02d}.bin", payload)
        zf.writestr(f"{norm}-{version}.dist-info/METADATA", f"Name: {name}\n")
    return path


def make_sdist(directory: Path, name: str, version: str, payload: bytes) -> Path:
    path = directory / f"{name.replace('-', '_')}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, data in ((f"{name}-{version}/data/chunk.bin", payload), ("x/README", b"hi")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    d = tmp_path / "dl"
    d.mkdir()
    return [make_wheel(d, f"fake-part{i + 1}", "0.1.0", c) for i, c in enumerate(CHUNKS)]


def test_joins_chunks_in_the_given_order_and_verifies(wheels: list[Path], tmp_path: Path) -> None:
    seen: list[int] = []
    dest = tmp_path / "models" / "m.gguf"
    asm.assemble(wheels, dest, size=len(WHOLE), sha256=SHA, progress=seen.append)
    assert dest.read_bytes() == WHOLE
    assert sum(seen) == len(WHOLE)
    assert not (tmp_path / "models" / "m.gguf.partial").exists()


def test_wrong_order_is_a_hash_mismatch_and_leaves_nothing(
    wheels: list[Path], tmp_path: Path
) -> None:
    dest = tmp_path / "m.gguf"
    with pytest.raises(LocalError, match="sha256 mismatch") as info:
        asm.assemble(list(reversed(wheels)), dest, size=len(WHOLE), sha256=SHA)
    assert SHA in str(info.value)
    assert not dest.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_size_mismatches_are_refused(wheels: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "m.gguf"
    with pytest.raises(LocalError, match="more than the pinned"):
        asm.assemble(wheels, dest, size=len(WHOLE) - 1, sha256=SHA)
    with pytest.raises(LocalError, match="add up to"):
        asm.assemble(wheels, dest, size=len(WHOLE) + 1, sha256=SHA)
    assert not dest.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_an_existing_good_file_is_not_replaced_by_a_bad_join(
    wheels: list[Path], tmp_path: Path
) -> None:
    dest = tmp_path / "m.gguf"
    asm.assemble(wheels, dest, size=len(WHOLE), sha256=SHA)
    with pytest.raises(LocalError):
        asm.assemble(wheels[:2], dest, size=len(WHOLE), sha256=SHA)
    assert dest.read_bytes() == WHOLE


def test_reads_chunks_out_of_sdists_too(tmp_path: Path) -> None:
    a = make_sdist(tmp_path, "fake-a", "1.0", CHUNKS[0])
    b = make_wheel(tmp_path, "fake-b", "1.0", b"".join(CHUNKS[1:]))
    dest = tmp_path / "m.gguf"
    asm.assemble([a, b], dest, size=len(WHOLE), sha256=SHA)
    assert dest.read_bytes() == WHOLE


@pytest.mark.parametrize("bins", [0, 2])
def test_an_archive_must_hold_exactly_one_chunk(tmp_path: Path, bins: int) -> None:
    wheel = make_wheel(tmp_path, "fake-x", "1.0", b"abc", bins=bins)
    with pytest.raises(LocalError, match=f"exactly one .bin chunk, holds {bins}"):
        list(asm.iter_chunk(wheel))


def test_a_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "fake_x-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(LocalError, match="not a readable archive"):
        asm.assemble([bad], tmp_path / "m.gguf", size=3, sha256=SHA)
    assert not (tmp_path / "m.gguf.partial").exists()


def test_find_archive_matches_name_and_version_exactly(tmp_path: Path) -> None:
    w1 = make_wheel(tmp_path, "tiny-model-part1", "0.2.0", b"a")
    make_wheel(tmp_path, "tiny-model-part10", "0.2.0", b"b")
    make_wheel(tmp_path, "tiny-model-part1", "0.3.0", b"c")
    assert asm.find_archive(tmp_path, "tiny-model-part1", "0.2.0") == w1
    assert asm.find_archive(tmp_path, "Tiny.Model_Part1", "0.2.0") == w1
    sd = make_sdist(tmp_path, "other-pkg", "2.0", b"x")
    assert asm.find_archive(tmp_path, "other-pkg", "2.0") == sd
    with pytest.raises(LocalError, match="missing"):
        asm.find_archive(tmp_path, "tiny-model-part2", "0.2.0")


def test_sha256_file_reports_progress(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(WHOLE)
    seen: list[int] = []
    assert asm.sha256_file(f, seen.append) == SHA
    assert sum(seen) == len(WHOLE)


Usage = namedtuple("Usage", "total used free")


def test_disk_space_check_says_what_is_needed_and_how_to_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asm.shutil, "disk_usage", lambda _p: Usage(10 * asm.GIB, 0, asm.GIB // 2))
    with pytest.raises(LocalError) as info:
        asm.check_free_space(tmp_path / "not" / "yet", 2 * asm.GIB, "the thing")
    msg = str(info.value)
    assert "need 2.0 GiB" in msg and "0.5 GiB free" in msg and "LATM_LOCAL_DIR" in msg
    asm.check_free_space(tmp_path, asm.GIB // 4, "the thing")


def test_free_bytes_probes_the_nearest_existing_parent(tmp_path: Path) -> None:
    assert asm.free_bytes(tmp_path / "a" / "b" / "c") == asm.free_bytes(tmp_path)
