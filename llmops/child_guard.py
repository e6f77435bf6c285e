"""Run a program that dies with its supervisor and leaves stopping to it.

Usage: `python -m llmops.child_guard PPID -- ARGV...`.

Why a launcher and not `preexec_fn`: the supervisor has threads (librdkafka's,
output readers), and code run between fork and exec in a threaded process can
deadlock. This module runs in a fresh interpreter, sets two things that survive
`execve`, then becomes the program (Tansu, or `llmops worker`/`receive`):

- PR_SET_PDEATHSIG = SIGKILL: the kernel kills the program when its parent
  dies, whatever killed the parent (SIGKILL of `up` included), so no orphan
  keeps the ports and answers. Linux sends it when the *thread* that forked the
  child exits: the supervisor forks from its main thread only. If the parent
  died before the flag was set, getppid() no longer matches and we exit.
- SIGTERM blocked: when every process gets SIGTERM at once (systemd stops a
  service's whole cgroup that way), the children would otherwise stop in no
  order, the broker first, losing what it holds. Blocked, the signal stays
  pending and the supervisor stops each child in order with SIGINT (Tansu, faust
  and the receiver all stop gracefully on SIGINT). SIGKILL cannot be blocked.

Non-Linux systems get neither guarantee; the program simply runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["guarded_argv"]

_PR_SET_PDEATHSIG = 1


def guarded_argv(argv: list[str]) -> list[str]:
    """`argv` run through this launcher, guarded for the calling process as parent."""
    return [sys.executable, "-m", "llmops.child_guard", str(os.getpid()), "--", *argv]


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the flag was set
        raise SystemExit(1)


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        raise SystemExit("usage: python -m llmops.child_guard PARENT_PID -- PROGRAM [ARGS...]")
    _die_with_parent(int(args[0]))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    program = args[2:]
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
