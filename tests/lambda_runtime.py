"""A minimal Lambda Runtime API on 127.0.0.1, for running AWS's own runtime client
(`python -m awslambdaric module.handler`) against it in tests.

As awslambdaric 4.2 expects it: `/next` blocks while there is nothing to do and answers with
`Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`, `-Invoked-Function-Arn` and
`Content-Type: application/json`; `/response`, `/error` and `/init/error` answer 202.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ARN = "arn:aws:lambda:us-east-1:123456789012:function:e2e"


class RuntimeAPI:
    """Queue events with `invoke(event)`; each returns (kind, payload): ("response"|"error", decoded JSON)."""

    def __init__(self, on_response: Callable[[str], Any] | None = None) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.results: dict[str, queue.Queue[tuple[str, Any]]] = {}
        self.init_errors: list[Any] = []
        self.snapshots: dict[str, Any] = {}  # what on_response saw when each answer arrived
        self.on_response = on_response
        self.stopping = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                while not api.stopping.is_set():
                    try:
                        request_id, event = api.events.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    body = json.dumps(event).encode()
                    self.send_response(200)
                    self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 30) * 1000)))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", ARN)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = json.loads(data) if data else None
                match = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
                if match is not None:
                    request_id, kind = match.groups()
                    if api.on_response is not None:
                        api.snapshots[request_id] = api.on_response(request_id)
                    api.results[request_id].put((kind, payload))
                elif self.path.endswith("/runtime/init/error"):
                    api.init_errors.append(payload)
                else:
                    self.send_error(404)
                    return
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="runtime-api", daemon=True)
        self.thread.start()

    def invoke(self, event: Any, timeout: float = 20.0) -> tuple[str, Any, str]:
        """(kind, payload, request id) of one invocation."""
        request_id = str(uuid.uuid4())
        self.results[request_id] = queue.Queue()
        self.events.put((request_id, event))
        kind, payload = self.results[request_id].get(timeout=timeout)
        return kind, payload, request_id

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
