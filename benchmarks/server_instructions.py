"""Instructions per HTTP request inside a real uvicorn protocol, counted by callgrind: the judged
HTTP targets (`../shared/bench/run fn|mw`) as a deterministic number, server included.

    valgrind --tool=callgrind --toggle-collect=map_next --callgrind-out-file=OUT \\
        python benchmarks/server_instructions.py VARIANT [--n 2000] [--conns 32]
    # instructions per request = the "summary:" line of OUT / n
    python benchmarks/server_instructions.py --all [--n 2000]   # runs valgrind per variant itself

The variants are the bench's own apps (`../shared/bench/apps.py`: bare, bare_sync, asgi_mw,
handler_async, handler_inline, ...). Each of `--conns` connections is uvicorn's httptools
protocol over a transport that keeps what is written (no socket): per round, every connection
receives a `wrk`-like GET, then the loop (uvloop) runs until every response is written. So the
count holds uvicorn's parsing, its request task and keep-alive timer, the app and lambdify,
and not the kernel's socket work (which is the same for every variant). Times under a loaded
server drift by 25%; these counts do not, which is what makes small changes measurable.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
from typing import Any

from _callgrind import instructions

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "shared", "bench")
REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:18000\r\n\r\n"  # what wrk sends


class Transport(asyncio.Transport):
    """A connection's transport that keeps no bytes: counts the 200 responses by their status lines."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0

    def write(self, data: Any) -> None:
        if data[:13] == b"HTTP/1.1 200 ":  # (an error page must not pass for an answer)
            self.responses += 1

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 18000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def serve(variant: str, n: int, conns: int) -> None:
    import uvloop
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    sys.path.insert(0, BENCH)
    import apps  # type: ignore[import-not-found]

    app = getattr(apps, variant)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = Config(app=app, http="httptools", loop="none", lifespan="off", access_log=False, log_level="warning")
    config.load()
    state = ServerState()
    links = []
    for _ in range(conns):
        protocol = HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
        transport = Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        links.append((protocol, transport))

    async def rounds(count: int) -> None:
        for _ in range(count):
            for protocol, _ in links:
                protocol.data_received(REQUEST)
            want = sum(t.responses for _, t in links) + conns
            for _ in range(1000):  # (bounded: a variant that stops answering 200 fails below)
                if sum(t.responses for _, t in links) >= want:
                    break
                await asyncio.sleep(0)

    rounds_per_run = max(1, n // conns)
    loop.run_until_complete(rounds(max(1, 300 // conns)))  # warm: contexts made, caches filled
    # Only what runs inside map_next is counted (--toggle-collect=map_next): the measured rounds.
    collections.deque(map(lambda k: loop.run_until_complete(rounds(k)), [rounds_per_run]), 0)
    total = sum(t.responses for _, t in links)
    assert total == (max(1, 300 // conns) + rounds_per_run) * conns, total


def count(variant: str, n: int, conns: int) -> int:
    total = instructions(__file__, variant, "--n", str(n), "--conns", str(conns), toggle="map_next")
    return total // (max(1, n // conns) * conns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", nargs="?")
    parser.add_argument(
        "--all", action="store_true", help="count bare, asgi_mw, handler_async, bare_sync, handler_inline"
    )
    parser.add_argument("--variants", default="bare,asgi_mw,handler_async,bare_sync,handler_inline")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--conns", type=int, default=32)
    args = parser.parse_args()
    if not args.all:
        serve(args.variant, args.n, args.conns)
        return
    counts = {}
    for variant in args.variants.split(","):
        counts[variant] = count(variant, args.n, args.conns)
        print(f"{variant:16s} {counts[variant]:>9,d} instructions/request", flush=True)
    for variant, base in (("asgi_mw", "bare"), ("handler_async", "bare"), ("handler_inline", "bare_sync")):
        if variant in counts and base in counts:
            print(f"{variant} / {base}: {counts[variant] / counts[base]:.3f}x the instructions")


if __name__ == "__main__":
    main()
