"""Length-prefixed JSON messages over a stream socket, for the parent and its child processes.

One message is a 4-byte big-endian length and that many bytes of UTF-8 JSON. The sync side
uses blocking reads with a timeout; the async side uses the running loop's socket methods.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Final

_HEADER: Final = struct.Struct(">I")
_INCOMPLETE: Final = object()
SPIN = 0.0002  # seconds a reader polls for a message before it blocks


class ChannelClosed(EOFError):
    """The other end went away (a child that exited or was killed)."""


def encode(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._poll: Any = None

    def close(self) -> None:
        self.sock.close()

    # -- blocking ----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self.sock.sendall(encode(message))

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; `TimeoutError` after `timeout` seconds, `ChannelClosed` at EOF.

        One `recv` usually brings a whole small message; the wait is a `poll` on a blocking
        socket (a socket timeout would cost a mode switch and a poll on every read).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._take()
            if message is not _INCOMPLETE:
                return message
            self._fill(deadline)

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
        return json.loads(body)

    def _fill(self, deadline: float | None) -> None:
        # An answer usually comes within tens of microseconds: polling for it briefly saves the
        # wake-up of a blocked process, which costs about as much as the round trip itself.
        # (Only a reader with a deadline spins: the parent awaiting an answer. A child awaiting
        # its next invocation may wait for minutes, and would only take a CPU from its parent.)
        spin_until = time.perf_counter() + SPIN if deadline is not None else 0.0
        while True:
            try:
                chunk = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() < spin_until:
                    continue
                break
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            self._buffer += chunk
            return
        if deadline is not None:
            if self._poll is None:
                import select

                self.sock.setblocking(True)
                self._poll = select.poll()
                self._poll.register(self.sock, select.POLLIN)
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(max(1, int(left * 1000))):
                raise TimeoutError
        try:
            chunk = self.sock.recv(1 << 16)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not chunk:
            raise ChannelClosed("connection closed")
        self._buffer += chunk

    # -- asyncio -----------------------------------------------------------------------------

    async def asend(self, message: Any) -> None:
        import asyncio

        if self.sock.getblocking():
            self.sock.setblocking(False)
        await asyncio.get_running_loop().sock_sendall(self.sock, encode(message))

    async def arecv(self) -> Any:
        """The next message (cancel it, e.g. with asyncio.timeout, to give up)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self.sock.getblocking():
            self.sock.setblocking(False)
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
