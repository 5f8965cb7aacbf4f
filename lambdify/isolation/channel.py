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


class ChannelClosed(EOFError):
    """The other end went away (a child that exited or was killed)."""


def encode(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    # -- blocking ----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self.sock.sendall(encode(message))

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; `TimeoutError` after `timeout` seconds, `ChannelClosed` at EOF."""
        deadline = None if timeout is None else time.monotonic() + timeout
        header = self._read(_HEADER.size, deadline)
        return json.loads(self._read(_HEADER.unpack(header)[0], deadline))

    def _read(self, size: int, deadline: float | None) -> bytes:
        chunks = []
        while size:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                chunk = self.sock.recv(min(size, 1 << 20))
            except TimeoutError:
                raise
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    # -- asyncio -----------------------------------------------------------------------------

    async def asend(self, message: Any) -> None:
        import asyncio

        self.sock.setblocking(False)
        await asyncio.get_running_loop().sock_sendall(self.sock, encode(message))

    async def arecv(self) -> Any:
        """The next message (cancel it, e.g. with asyncio.timeout, to give up)."""
        header = await self._aread(_HEADER.size)
        return json.loads(await self._aread(_HEADER.unpack(header)[0]))

    async def _aread(self, size: int) -> bytes:
        import asyncio

        self.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        chunks = []
        while size:
            try:
                chunk = await loop.sock_recv(self.sock, min(size, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
