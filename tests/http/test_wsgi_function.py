"""`fn.wsgi`: a function served by a real gunicorn."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import httpx
from servers import PORT, serve_command

APP = """
import json
import os
import time
from pathlib import Path

from lambdify import handler

MARKS = Path({marks!r})


def write_mark(name):
    time.sleep(0.3)
    MARKS.joinpath(name).write_text("done")


@handler(timeout=1)
def fn(event, context):
    path = event["rawPath"]
    if path == "/slow":
        time.sleep(3)
    if path == "/boom":
        raise ValueError("no good")
    if path == "/defer":
        context.defer(write_mark, context.aws_request_id)
        return {{"statusCode": 200, "body": context.aws_request_id}}
    return {{
        "path": path,
        "query": event.get("queryStringParameters"),
        "method": event["requestContext"]["http"]["method"],
        "body": event.get("body"),
        "pid": os.getpid(),
    }}


app = fn.wsgi
"""


def test_function_under_gunicorn(tmp_path: Path) -> None:
    (tmp_path / "wsgi_fn.py").write_text(textwrap.dedent(APP.format(marks=str(tmp_path))))
    command = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{PORT}", "wsgi_fn:app"]
    with serve_command(command, cwd=tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        ok = client.post("/a/b%20c?x=1&x=2", content=b'{"k": 1}', headers={"content-type": "application/json"})
        assert ok.status_code == 200
        assert ok.json()["path"] == "/a/b%20c"
        assert ok.json()["query"] == {"x": "1,2"}
        assert ok.json()["method"] == "POST"
        assert ok.json()["body"] == '{"k": 1}'
        assert ok.headers["x-amzn-requestid"]

        started = time.monotonic()
        slow = client.get("/slow")
        assert slow.status_code == 504 and "message" in slow.json()
        assert time.monotonic() - started < 2.5
        assert client.get("/").status_code == 200  # the (single) worker answers at once after a 504

        boom = client.get("/boom")
        assert boom.status_code == 502 and boom.json() == {"message": "Internal Server Error"}

        deferred = client.get("/defer")
        assert deferred.status_code == 200
        # The deferred work finishes after the response, before the worker takes the next request.
        assert client.get("/").status_code == 200
        assert (tmp_path / deferred.text).read_text() == "done"
