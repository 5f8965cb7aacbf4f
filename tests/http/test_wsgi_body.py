"""When a WSGI response is done (DESIGN.md §5): exhausted or closed, whichever comes first, and
what passes through untouched. In-process with Flask's test client, as users run their tests:
on the main thread (the inline path) and on another thread (the hand-off path)."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask

from lambdify import WSGIMiddleware, current_context

T = TypeVar("T")


def _on_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on a thread that is not the main one (the hand-off path), and return its result."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # noqa: B036 - handed back to the test
            box.append((False, exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


PATHS = [pytest.param(lambda fn: fn(), id="inline"), pytest.param(_on_thread, id="hand-off")]


def _flask_app(done: list[str]) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict[str, Any]:
        context = current_context()
        context.defer(done.append, context.aws_request_id)
        return {"request_id": context.aws_request_id, "main": threading.current_thread() is threading.main_thread()}

    @app.get("/interrupt")
    def interrupt() -> str:
        raise KeyboardInterrupt

    @app.get("/exit")
    def exit_() -> str:
        raise SystemExit(3)

    return app


@pytest.mark.parametrize("run", PATHS)
def test_bodies_read_to_the_end_but_never_closed_release_their_context(run: Any) -> None:
    done: list[str] = []
    app = _flask_app(done)
    middleware = WSGIMiddleware(app.wsgi_app)
    app.wsgi_app = middleware  # type: ignore[method-assign]

    def forty_unclosed() -> list[int]:
        client = app.test_client()
        kept = []  # (held, so that none is released by garbage collection)
        for _ in range(40):
            response = client.get("/")  # no `with`, no close(): reading the JSON exhausts the body
            assert response.get_json()["request_id"]
            assert response.get_json()["main"] is (run is not _on_thread)  # inline on the main thread
            kept.append(response)
        return [response.status_code for response in kept]

    statuses = run(forty_unclosed)
    assert statuses == [200] * 40  # with 16 pinned contexts, the 17th would have been a 429
    assert len(done) == 40  # and every invocation's deferred work ran
    stats = middleware.function.stats()
    assert stats["invocations"] == 40 and stats["throttles"] == 0
    assert stats["contexts_alive"] == 1  # one request at a time: one warm context, reused
    middleware.function.shutdown()


@pytest.mark.parametrize("run", PATHS)
def test_a_body_neither_read_nor_closed_is_released_when_collected(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []
    app = _flask_app(done)
    middleware = WSGIMiddleware(app)

    def unread() -> int:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x", "SERVER_PORT": "80"}
        environ |= {"wsgi.url_scheme": "http", "wsgi.input": None, "SERVER_PROTOCOL": "HTTP/1.1"}
        body = middleware(environ, lambda status, headers, exc_info=None: None)
        del body
        gc.collect()
        return middleware.function.stats()["contexts_alive"]

    with caplog.at_level(logging.WARNING, logger="lambdify"):
        run(unread)
    assert len(done) == 1  # the deferred work ran at collection
    assert any("garbage-collected" in record.getMessage() for record in caplog.records)
    stats = middleware.function.stats()
    assert stats["invocations"] == 1 and stats["contexts_alive"] == 1
    run(unread)  # the context was back in the pool: the next request is warm
    stats = middleware.function.stats()
    assert stats["invocations"] == 2 and stats["cold_starts"] == 1 and stats["warm_starts"] == 1
    middleware.function.shutdown()


@pytest.mark.parametrize("run", PATHS)
@pytest.mark.parametrize(
    ("path", "exc_type"), [("/interrupt", KeyboardInterrupt), ("/exit", SystemExit)], ids=["interrupt", "exit"]
)
def test_base_exceptions_pass_through_unchanged_and_retire_the_context(
    run: Any, path: str, exc_type: type[BaseException]
) -> None:
    app = _flask_app([])
    middleware = WSGIMiddleware(app.wsgi_app)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    client = app.test_client()
    started = time.monotonic()
    with pytest.raises(exc_type):
        run(lambda: client.get(path))
    assert time.monotonic() - started < 2  # never the 30 s deadline's 504
    stats = middleware.function.stats()
    assert stats["contexts_retired"] == 1 and stats["contexts_alive"] == 0
    assert stats["errors"] == 1 and stats["timeouts"] == 0
    assert run(lambda: client.get("/").status_code) == 200  # a fresh context serves the next one
    middleware.function.shutdown()


def test_flasks_own_baseexception_test_passes_wrapped() -> None:
    # Flask's tests/test_basic.py::test_baseexception_error_handling, with the app wrapped.
    app = Flask(__name__)
    app.config.update(TESTING=True)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]

    @app.route("/")
    def broken_func() -> str:
        raise KeyboardInterrupt()

    client = app.test_client()
    with client:
        with pytest.raises(KeyboardInterrupt):
            client.get("/")


EXIT_SCRIPT = """
import sys, time
from flask import Flask
from lambdify import WSGIMiddleware, current_context

app = Flask(__name__)

def record(line):
    with open("deferred.txt", "a") as out:
        out.write(line + "\\n")

@app.get("/")
def index():
    current_context().defer(record, current_context().aws_request_id)
    return "ok"

app.wsgi_app = WSGIMiddleware(app.wsgi_app)
client = app.test_client()
read = []
for _ in range(30):
    read.append(client.get("/"))
    assert read[-1].data == b"ok"  # read to the end, never closed
unread = [client.get("/") for _ in range(10)]  # neither read nor closed, still referenced at exit
print(sum(1 for response in read + unread if response.status_code == 200))
print(time.time(), flush=True)
"""


def test_the_interpreter_exits_promptly_after_unclosed_responses(tmp_path: Path) -> None:
    script = tmp_path / "unclosed.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    exited = time.time()
    assert proc.returncode == 0, proc.stderr
    count, ended = proc.stdout.split()
    assert count == "40"
    assert exited - float(ended) < 1.0, f"exit took {exited - float(ended):.2f} s"
    assert len(set((tmp_path / "deferred.txt").read_text().split())) == 40  # nothing pending was lost
    assert proc.stderr.count("still open at exit") == 0  # (the library logs to a NullHandler)


@pytest.mark.parametrize(("outer", "inner"), [(5.0, 0.3), (0.3, 5.0)], ids=["inner-first", "outer-first"])
def test_stacked_middlewares_each_keep_their_deadline(outer: float, inner: float) -> None:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        time.sleep(1)
        return "late"

    inner_mw = WSGIMiddleware(app.wsgi_app, timeout=inner, name="inner")
    outer_mw = WSGIMiddleware(inner_mw, timeout=outer, name="outer")
    app.wsgi_app = outer_mw  # type: ignore[method-assign]
    started = time.monotonic()
    response = app.test_client().get("/")
    elapsed = time.monotonic() - started
    response.close()
    assert response.status_code == 504
    first = inner_mw if inner < outer else outer_mw
    assert first.function.stats()["timeouts"] == 1
    assert elapsed < 2.5
    inner_mw.function.shutdown()
    outer_mw.function.shutdown()


TIMER_SCRIPT = """
import atexit, signal

def check():  # registered first, so it runs after lambdify's own exit hooks
    print("timer at exit:", signal.getitimer(signal.ITIMER_REAL))

atexit.register(check)

from flask import Flask
from lambdify import WSGIMiddleware

app = Flask(__name__)
app.get("/")(lambda: "ok")
app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=5)
assert app.test_client().get("/").data == b"ok"
print("timer after the request:", signal.getitimer(signal.ITIMER_REAL)[0] > 0)
"""


def test_no_timer_is_left_to_go_off_after_exit(tmp_path: Path) -> None:
    # The timer is left set between requests (moving it costs a system call); a process that
    # exits before it goes off must not die of SIGALRM while the interpreter finalizes.
    script = tmp_path / "timer.py"
    script.write_text(textwrap.dedent(TIMER_SCRIPT))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "timer after the request: True" in proc.stdout
    assert "timer at exit: (0.0, 0.0)" in proc.stdout


def _serve(app: Callable[..., Any]) -> tuple[list[str], bytes, BaseException | None]:
    """What a WSGI server does with one request: call, write what comes (write() and the body),
    then close the body. Returns (the statuses it was given, the bytes, what close() raised)."""
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if statuses and exc_info is None:
            raise AssertionError("Response headers already set!")  # (as gunicorn says)
        statuses.append(status)
        return written.append

    body = app(environ, start_response)
    written.extend(body)
    try:
        body.close()  # type: ignore[attr-defined]
    except Exception as exc:
        return statuses, b"".join(written), exc
    return statuses, b"".join(written), None


@pytest.mark.parametrize("run", PATHS)
def test_a_body_after_the_legacy_write_callable_is_sent_whole(run: Any) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"head;")
        return [b"tail"]

    middleware = WSGIMiddleware(app, timeout=5)
    assert run(lambda: _serve(middleware)) == (["200 OK"], b"head;tail", None)
    assert middleware.function.stats()["errors"] == 0
    middleware.function.shutdown()


@pytest.mark.parametrize("run", PATHS)
def test_a_body_whose_close_fails_is_sent_whole_and_the_server_sees_the_error(run: Any) -> None:
    class Body:
        def __iter__(self) -> Any:
            return iter([b"hello ", b"world"])

        def close(self) -> None:
            raise RuntimeError("close failed")

    def app(environ: Any, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    middleware = WSGIMiddleware(app, timeout=5)
    statuses, data, error = run(lambda: _serve(middleware))
    assert (statuses, data) == (["200 OK"], b"hello world")  # as without lambdify: whole, then close() fails
    assert isinstance(error, RuntimeError) and str(error) == "close failed"
    middleware.function.shutdown()
