"""The fork template of process isolation: a small single-threaded interpreter, started once per
server process, that forks each execution-context child on request (its side is
`child.template_main`). Children are never forked from the server itself, whose threads would
leave the child's locks in an unknown state.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Final

from ..core import hooks
from ..core.logs import logger

_FORK_TIMEOUT: Final = 10.0


class _Template:
    """The fork template process, and the thread that reads what it reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._next = 0
        self._forks: dict[int, list[Any]] = {}
        self._exits: dict[int, int] = {}
        self._exit_events: dict[int, threading.Event] = {}

    def _start(self) -> socket.socket:
        import _thread

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        # The template dies with the *thread* that started it (PR_SET_PDEATHSIG is per thread),
        # so the thread that reads from it, which lives exactly as long, starts it.
        _thread.start_new_thread(self._launch_and_read, (ours, theirs))
        return ours

    def _launch_and_read(self, ours: socket.socket, theirs: socket.socket) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            proc = self._proc = subprocess.Popen(
                [
                    sys.executable,
                    # The server's own -X/-W options (dev mode, warnings as errors...), as
                    # multiprocessing passes them on: the handler runs under the same rules.
                    *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                    "-c",
                    "import lambdify; from lambdify.isolation.child import template_main; template_main()",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            logger.exception("could not start the fork template for process isolation")
            ours.close()
            return
        finally:
            theirs.close()
        self._read(ours)
        try:  # it closed its end: reap it
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def fork(self, fd: int) -> int:
        """A new child (pid) whose end of the conversation is `fd`."""
        with self._lock:
            sock = self._sock if self._sock is not None else self._start()
            self._next += 1
            request_id = self._next
            waiter: list[Any] = [threading.Event(), None]
            self._forks[request_id] = waiter
            socket.send_fds(sock, [json.dumps({"op": "fork", "id": request_id}).encode()], [fd])
        if not waiter[0].wait(_FORK_TIMEOUT) or waiter[1] is None:
            raise RuntimeError("the fork template did not answer (it may have died); see the server's log")
        pid: int = waiter[1]
        self._exit_events.setdefault(pid, threading.Event())
        return pid

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            if message["op"] == "forked":
                waiter = self._forks.pop(message["id"], None)
                if waiter is not None:
                    waiter[1] = message["pid"]
                    waiter[0].set()
            elif message["op"] == "exit":
                pid = message["pid"]
                self._exits[pid] = message["status"]
                self._exit_events.setdefault(pid, threading.Event()).set()
        with self._lock:  # the template is gone: the next fork starts a new one
            if self._sock is sock:
                self._sock = None
            sock.close()
            for waiter in self._forks.values():
                waiter[0].set()
            self._forks.clear()
            # Its children died with it and nobody is left to report how: stop waiting for that.
            for event in self._exit_events.values():
                event.set()

    def has_exited(self, pid: int) -> bool:
        """Whether `pid` is known to be gone: its exit reported, or the template gone (its children with it)."""
        return pid in self._exits or self._sock is None

    def exit_status(self, pid: int, timeout: float) -> int | None:
        event = self._exit_events.setdefault(pid, threading.Event())
        if not event.wait(timeout):
            return None
        self._exit_events.pop(pid, None)
        return self._exits.pop(pid, None)

    def stop(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            proc, self._proc = self._proc, None
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def reset_after_fork(self) -> None:
        # A forked server worker must not share its parent's template (nor its reader thread),
        # nor keep its socket open: the template exits when the last holder closes it.
        if self._sock is not None:
            self._sock.close()
        self.__init__()  # type: ignore[misc]


template = _Template()
hooks.at_fork(template.reset_after_fork)


def stop_template() -> None:
    template.stop()


def describe_exit(status: int | None) -> str:
    """Lambda's wording: `Runtime exited with error: exit status 3`, `... signal: segmentation fault`."""
    if status is None:
        return "Runtime exited without providing a reason"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = (signal.strsignal(sig) or f"signal {sig}").lower()
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"Runtime exited with error: signal: {name}{core}"
    return f"Runtime exited with error: exit status {os.waitstatus_to_exitcode(status)}"
