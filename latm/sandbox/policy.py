"""The sandbox's seccomp policy, compiled on the host with libseccomp (``pyseccomp``).

Two filters, both default-allow deny lists for the native architecture (any
other architecture, x32 included, kills the process):

* the **base** filter, loaded by every sandbox process once it is set up:
  no ``execve``, no sockets, no ``ptrace`` or cross-process memory access, no
  mounts or namespaces, no ``io_uring`` (which would bypass this filter), no
  kernel keyrings, modules, BPF, perf or clock changes; no System V or POSIX
  IPC (shared memory, message queues, semaphores: they would outlive the
  sandbox on a host without an IPC namespace) and no ``memfd`` (memory outside
  the address-space limit); no system call aimed at another process's
  limits, priority, scheduling or group (``prlimit64``, ``setpriority``,
  ``sched_*``, ``getpgid``/``getsid``... with a pid other than 0, i.e. itself);
* the **call** filter, stacked on top before any tool code runs: no new
  processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``,
  ``clone3`` answers ``ENOSYS`` so threads fall back to ``clone``), no
  signals to anyone (``kill``, ``tgkill``, ``pidfd_send_signal``...) and no
  POSIX timers (a timer could fire in a later call of a warm worker).

The host exports both as BPF programs; the sandbox loads them with ``prctl``
(:func:`latm.sandbox.confine.load_seccomp`), so it needs neither libseccomp nor
the host's Python packages.
"""

from __future__ import annotations

import errno
import tempfile
from dataclasses import dataclass
from typing import Any

BASE_DENIED = (
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "socket",
    "socketpair",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "fanotify_init",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "vhangup",
    "uselib",
    "ioperm",
    "iopl",
    "personality",
    "lookup_dcookie",
    "migrate_pages",
    "move_pages",
    "mbind",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "memfd_create",
    "memfd_secret",
    "ioprio_set",
    "kcmp",
    "process_madvise",
    "process_mrelease",
)
"""System calls no sandbox process may make (they fail with ``EPERM``)."""

SELF_ONLY = (
    "prlimit64",
    "sched_setaffinity",
    "sched_getaffinity",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_setparam",
    "sched_getparam",
    "sched_setattr",
    "sched_getattr",
    "sched_rr_get_interval",
    "getpgid",
    "getsid",
    "setpgid",
    "get_robust_list",
    "ioprio_get",
)
"""System calls whose first argument names a process: allowed only with 0 (the caller)."""

CALL_DENIED = (
    "fork",
    "vfork",
    "kill",
    "tkill",
    "tgkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_send_signal",
    "pidfd_open",
    "timer_create",
)
"""System calls tool code may not make, on top of :data:`BASE_DENIED`."""

_CLONE_THREAD = 0x00010000
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C


@dataclass(frozen=True, slots=True)
class SeccompPrograms:
    """The two compiled filters, as BPF programs.

    Attributes:
        base: Loaded by every sandbox process after its set-up.
        call: Stacked on top before tool code runs.
    """

    base: bytes
    call: bytes


def _export(filt: Any) -> bytes:
    with tempfile.TemporaryFile() as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return bytes(handle.read())


def _deny(seccomp: Any, filt: Any, names: tuple[str, ...], err: int) -> None:
    for name in names:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number < 0:  # unknown on this architecture (e.g. fork on arm64)
            continue
        filt.add_rule(seccomp.ERRNO(err), number)


def compile_programs() -> SeccompPrograms:
    """Compile the base and call filters for the native architecture.

    Raises:
        ImportError: If ``pyseccomp`` or the system's libseccomp is missing.
        OSError: If libseccomp refuses a rule.
    """
    import pyseccomp as seccomp  # type: ignore[import-untyped]

    base = seccomp.SyscallFilter(seccomp.ALLOW)
    base.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    _deny(seccomp, base, BASE_DENIED, errno.EPERM)
    for name in SELF_ONLY:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0:
            base.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(0, seccomp.NE, 0))
    # setpriority(which, who, prio) / getpriority(which, who): only PRIO_PROCESS (0) of itself
    for name in ("setpriority", "getpriority"):
        base.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(0, seccomp.NE, 0))
        base.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(1, seccomp.NE, 0))
    for request in (_TIOCSTI, _TIOCLINUX):
        base.add_rule(
            seccomp.ERRNO(errno.EPERM),
            "ioctl",
            seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request),
        )

    call = seccomp.SyscallFilter(seccomp.ALLOW)
    call.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    _deny(seccomp, call, CALL_DENIED, errno.EPERM)
    call.add_rule(
        seccomp.ERRNO(errno.EPERM),
        "clone",
        seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0),
    )
    _deny(seccomp, call, ("clone3",), errno.ENOSYS)
    return SeccompPrograms(base=_export(base), call=_export(call))
