"""Confinement a sandbox process applies to itself: Landlock, seccomp, rlimits.

Standard library only (``ctypes``), compatible with Python 3.8 and later: this
module is shipped as source into the sandbox process, which runs under an
interpreter the sandbox user can read, without the host's virtual environment.
The host also imports it to probe the kernel's Landlock ABI.

Landlock (Linux 5.13+) restricts the file system; from ABI 4 also TCP bind and
connect; from ABI 6 signals and abstract unix sockets to the process's own
domain. Each call of :func:`landlock_restrict` stacks a new, nested domain.
The seccomp filter arrives as a BPF program compiled on the host (by
libseccomp, see :mod:`latm.sandbox.policy`) and is loaded with ``prctl``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
from collections.abc import Iterable

# Landlock system calls share their numbers on every architecture.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_ONLY = FS_READ_FILE | FS_READ_DIR
READ_WRITE = (
    FS_READ_FILE
    | FS_READ_DIR
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_REFER
    | FS_TRUNCATE
)

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _syscall(number: int, *args: object) -> int:
    ctypes.set_errno(0)
    return int(_lib().syscall(ctypes.c_long(number), *args))


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg2: int | ctypes.c_void_p = 0) -> None:
    value = arg2 if isinstance(arg2, ctypes.c_void_p) else ctypes.c_ulong(arg2)
    ctypes.set_errno(0)
    zero = ctypes.c_ulong(0)
    if _lib().prctl(ctypes.c_int(option), value, zero, zero, zero) != 0:
        raise _fail(f"prctl({option})")


def landlock_abi() -> int:
    """Return the kernel's Landlock ABI version, or ``-errno`` when it has none.

    ``-38`` (ENOSYS) means the kernel lacks Landlock; ``-95`` (EOPNOTSUPP)
    means it is built in but disabled at boot.
    """
    try:
        version = _syscall(
            _SYS_LANDLOCK_CREATE_RULESET,
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError):
        return -38
    if version < 0:
        return -ctypes.get_errno()
    return version


def _handled_fs(abi: int) -> int:
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= FS_REFER
    if abi >= 3:
        mask |= FS_TRUNCATE
    if abi >= 5:
        mask |= FS_IOCTL_DEV
    return mask


def no_new_privs() -> None:
    """Forbid the process and its children from ever gaining privileges."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def landlock_restrict(abi: int, rules: Iterable[tuple[str, int]]) -> int:
    """Stack a Landlock domain that allows only ``rules`` on the file system.

    Every file system right known to ``abi`` is handled (denied unless a rule
    allows it); TCP bind and connect are denied outright (ABI 4+), and signals
    and abstract unix sockets are scoped to the new domain (ABI 6+). Paths that
    do not exist are skipped.

    Args:
        abi: The kernel's Landlock ABI (from :func:`landlock_abi`).
        rules: ``(path, access)`` pairs; ``access`` is a mask of ``FS_*`` rights,
            reduced to the file rights for paths that are not directories.

    Returns:
        How many rules were added.

    Raises:
        OSError: If the kernel refuses (the process must then not go on).
    """
    if abi < 1:
        raise OSError(38, "Landlock is not available")
    handled_fs = _handled_fs(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled_fs, handled_net, scoped), 24)
    ruleset = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        ctypes.cast(attr, ctypes.c_void_p),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        raise _fail("landlock_create_ruleset")
    added = 0
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                mask = access & handled_fs
                if not os.path.isdir(path):
                    mask &= _FILE_ONLY
                beneath = ctypes.create_string_buffer(struct.pack("=Qi", mask, fd), 12)
                if (
                    mask
                    and _syscall(
                        _SYS_LANDLOCK_ADD_RULE,
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                        ctypes.cast(beneath, ctypes.c_void_p),
                        ctypes.c_uint32(0),
                    )
                    != 0
                ):
                    raise _fail(f"landlock_add_rule({path})")
                added += 1
            finally:
                os.close(fd)
        no_new_privs()
        if _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return added


def load_seccomp(bpf: bytes) -> None:
    """Install a classic BPF seccomp filter (as exported by libseccomp) on this thread.

    Args:
        bpf: The filter program, 8 bytes per instruction, native byte order.

    Raises:
        OSError: If the kernel refuses the filter.
    """
    if not bpf or len(bpf) % 8:
        raise ValueError("a seccomp program is a non-empty multiple of 8 bytes")

    class _SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    no_new_privs()
    pointer = ctypes.c_void_p(ctypes.addressof(fprog))
    ctypes.set_errno(0)
    zero = ctypes.c_ulong(0)
    if (
        _lib().prctl(
            ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), pointer, zero, zero
        )
        != 0
    ):
        raise _fail("prctl(PR_SET_SECCOMP)")


def die_with_parent(signal_number: int) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent exits."""
    _prctl(_PR_SET_PDEATHSIG, signal_number)


def not_dumpable() -> None:
    """Make the process non-dumpable: no core, no ``/proc/<pid>`` access by its uid."""
    _prctl(_PR_SET_DUMPABLE, 0)


def set_limits(
    *,
    memory_bytes: int | None = None,
    cpu_seconds: int | None = None,
    file_bytes: int | None = None,
    open_files: int | None = None,
    tasks: int | None = None,
) -> None:
    """Lower resource limits (soft and hard); ``None`` leaves a limit as it is.

    Core dumps are always disabled. ``tasks`` is ``RLIMIT_NPROC``: processes
    and threads of the real uid (meaningful when every sandbox has a uid of its own).
    """
    wanted = [(resource.RLIMIT_CORE, 0)]
    if memory_bytes is not None:
        wanted.append((resource.RLIMIT_AS, memory_bytes))
    if cpu_seconds is not None:
        wanted.append((resource.RLIMIT_CPU, cpu_seconds))
    if file_bytes is not None:
        wanted.append((resource.RLIMIT_FSIZE, file_bytes))
    if open_files is not None:
        wanted.append((resource.RLIMIT_NOFILE, open_files))
    if tasks is not None:
        wanted.append((resource.RLIMIT_NPROC, tasks))
    for which, value in wanted:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def cpu_seconds_used() -> float:
    """CPU time this process has used so far, user plus system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_utime + usage.ru_stime)


def set_soft_cpu_limit(seconds: int) -> None:
    """Set the soft CPU limit (``SIGXCPU``) below the unchanged hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        seconds = min(seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, hard))
