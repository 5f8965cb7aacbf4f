"""Length-prefixed JSON messages over a stream socket, for the parent and its child processes.

One message is a 4-byte big-endian length and that many bytes of UTF-8 JSON. The sync side
uses blocking reads with a timeout; the async side uses the running loop's socket methods.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from typing import Any, Final

from ..core.marshal import to_json

_HEADER: Final = struct.Struct(">I")
_INCOMPLETE: Final = object()
SPIN: Final = 100e-6  # seconds a parent polls for a quick answer before it sleeps
# A kernel socket timeout (SO_RCVTIMEO) counts whole clock ticks, 1-10 ms, and may end a tick or
# two late: a wait ended by one must be set this much short of its deadline.
_KERNEL_TIMER_SLACK = 0.05


class ChannelClosed(EOFError):
    """The other end went away (a child that exited or was killed)."""


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _data(chunk: bytes) -> bytes:
    if not chunk:
        raise ChannelClosed("connection closed")
    return chunk


# json.loads builds a decoder call (and looks up its defaults) on every call; a kept scanner
# decodes a small message in half the time. (Encoding: the package's kept encoder, `to_json`.)
_scan: Any = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]


def frame(text: str) -> bytes:
    """One message on the wire: the length, then the JSON text."""
    body = text.encode()
    return _HEADER.pack(len(body)) + body


def encode(message: Any) -> bytes:
    """A length-prefixed message. TypeError/ValueError if `message` is not JSON-serialisable."""
    return frame(to_json(message))


def decode(body: bytes) -> Any:
    """The value of one message body (exactly one JSON value, as `encode` writes it)."""
    text = body.decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError(f"malformed message at offset {exc.value}") from None
    if end != len(text):
        raise ValueError(f"malformed message: data after offset {end}")
    return value


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._poll: Any = None
        self._timeo = 0.0  # the socket's SO_RCVTIMEO in seconds (0: none set)
        # Polling only pays while the other process runs on another CPU: on a single one it
        # would keep the process that owes the answer from running at all.
        self._spin = SPIN if _usable_cpus() > 1 else 0.0
        self._spinning = True  # the last answer came within SPIN: poll for the next one

    def close(self) -> None:
        self.sock.close()

    # -- blocking ----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self.sock.sendall(encode(message))

    def send_frame(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; `TimeoutError` after `timeout` seconds, `ChannelClosed` at EOF.

        One `recv` usually brings a whole small message. The socket stays blocking (Python's
        socket timeouts would add a mode switch and a poll to every read); see `_read`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        buffer = self._buffer
        while True:
            if buffer:
                message = self._take()
                if message is not _INCOMPLETE:
                    return message
            chunk = self._read(deadline)
            if not buffer and len(chunk) >= _HEADER.size and len(chunk) == _HEADER.size + _HEADER.unpack_from(chunk)[0]:
                return decode(chunk[_HEADER.size :])  # the usual case: one read, one whole message
            buffer += chunk

    def _take(self) -> Any:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return _INCOMPLETE
        size = _HEADER.unpack_from(buffer)[0]
        end = _HEADER.size + size
        if len(buffer) < end:
            return _INCOMPLETE
        body = bytes(buffer[_HEADER.size : end])
        del buffer[:end]
        return decode(body)

    def _read(self, deadline: float | None) -> bytes:
        """The next bytes from the socket. Only a reader with a deadline (a parent awaiting an
        answer) polls: a child awaiting its next invocation may wait for minutes."""
        if deadline is None or not self._spin:
            return self._wait(deadline)
        # Waking a sleeping process on another CPU costs about as much as a short invocation
        # (more in a VM, where an idle CPU halts). So a parent polls for SPIN before it sleeps,
        # while answers keep coming that fast; one that would have missed the window turns it
        # off until an answer comes within it again.
        started = time.perf_counter()
        if self._spinning:
            until = started + self._spin
            sock = self.sock
            while True:
                try:
                    return _data(sock.recv(1 << 16, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    if time.perf_counter() >= until:
                        break
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from exc
        chunk = self._wait(deadline)
        self._spinning = time.perf_counter() - started < self._spin
        return chunk

    def _wait(self, deadline: float | None) -> bytes:
        if deadline is not None:
            # A blocking read that the kernel ends after SO_RCVTIMEO (set once, well short of the
            # deadline) is woken straight by the answer; waiting in poll() first costs a second
            # wake-up path, about 13 µs a round trip across two CPUs. Past that timer (or with a
            # deadline shorter than it), poll() waits out the rest to the millisecond.
            left = deadline - time.monotonic()
            if self._timeo and left >= self._timeo + _KERNEL_TIMER_SLACK:
                try:
                    return _data(self.sock.recv(1 << 16))
                except BlockingIOError:
                    pass  # the kernel's timer ran out
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from exc
            if self._poll is None:
                import select

                self._poll = select.poll()
                self._poll.register(self.sock, select.POLLIN)
            while True:  # (poll counts whole milliseconds: never give up before the deadline)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if self._poll.poll(math.ceil(left * 1000)):
                    break
        try:
            return _data(self.sock.recv(1 << 16))
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc

    def expect_waits(self, timeout: float) -> None:
        """Reads with a deadline will usually wait up to `timeout` seconds (an invocation's): give
        the socket a kernel read timeout that ends such a wait short of its deadline."""
        timeo = math.floor((timeout - 2 * _KERNEL_TIMER_SLACK) * 1000) / 1000
        if timeo < _KERNEL_TIMER_SLACK:
            return  # too short for the kernel's timer to help: every wait polls
        seconds = int(timeo)
        self.sock.setblocking(True)
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", seconds, round((timeo - seconds) * 1e6))
        )
        self._timeo = timeo

    # -- asyncio -----------------------------------------------------------------------------

    async def asend(self, message: Any) -> None:
        await self.asend_frame(encode(message))

    async def asend_frame(self, data: bytes) -> None:
        import asyncio

        if self.sock.getblocking():
            self.sock.setblocking(False)
            self._timeo = 0.0
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def arecv(self) -> Any:
        """The next message (cancel it, e.g. with asyncio.timeout, to give up)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self.sock.getblocking():
            self.sock.setblocking(False)
            self._timeo = 0.0
        while True:
            message = self._take()
            if message is not _INCOMPLETE:
                return message
            try:
                chunk = await loop.sock_recv(self.sock, 1 << 16)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            self._buffer += chunk
