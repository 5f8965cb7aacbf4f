"""`Event` invocations retried as Lambda retries asynchronous invocations (DESIGN.md §5).

The logic runs in-process through `httpx.ASGITransport` with the app's lifespan; `lambdify serve`
is run for real for boto3's `InvocationType="Event"` and for SIGTERM. Delays are shrunk through
`retry_delay`, never waited out; `max_event_age` keeps Lambda's 60-21600 s range, so giving up
on age is shown with a retry that would come due past it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from servers import PORT, boto3_lambda, serve_command

from lambdify import FunctionApp, FunctionError, LambdaContext, LambdifyError, handler
from lambdify.core.config import build_config

INVOKE = "/2015-03-31/functions/{}/invocations"
ROOT = Path(__file__).resolve().parent.parent.parent


@contextlib.asynccontextmanager
async def _client(*functions: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = FunctionApp(functions)
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
        yield client


async def _send_event(client: httpx.AsyncClient, name: str, event: Any) -> str:
    response = await client.post(INVOKE.format(name), json=event, headers={"X-Amz-Invocation-Type": "Event"})
    assert response.status_code == 202, response.text
    return response.headers["x-amzn-requestid"]


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110  (what is awaited runs in lambdify's own tasks and threads)
            await anyio.sleep(0.01)


def _given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lambdify" and "given up" in r.getMessage()]


@pytest.mark.anyio
async def test_a_handler_failing_twice_then_succeeding_runs_three_times(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[float] = []
    failures: list[Any] = []

    @handler(retry_delay=0.05, on_failure=lambda event, error: failures.append(event))
    def flaky(event: dict[str, Any], context: LambdaContext) -> str:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise RuntimeError(f"failure {len(runs)}")
        return "ok"

    try:
        async with _client(flaky) as client:
            await _send_event(client, "flaky", {"n": 1})
            await _until(lambda: len(runs) == 3)
            await anyio.sleep(0.3)  # (longer than a fourth attempt would take to come)
    finally:
        await flaky.ashutdown()

    assert len(runs) == 3 and failures == []
    assert runs[1] - runs[0] >= 0.05 and runs[2] - runs[1] >= 0.1  # retry_delay, then twice as long
    retrying = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retrying) == 2, retrying
    assert "(attempt 1 of 3): RuntimeError: failure 1; retrying in 0.05 s" in retrying[0]
    assert "(attempt 2 of 3): RuntimeError: failure 2; retrying in 0.1 s" in retrying[1]
    assert _given_up(caplog) == []


@pytest.mark.anyio
@pytest.mark.parametrize("attempts", [0, 1, 2], ids=["no-retry", "one-retry", "two-retries"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_always_failing_handler_reaches_on_failure_with_its_event(
    attempts: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[dict[str, Any]] = []
    failed: list[tuple[Any, LambdifyError]] = []

    def record(event: Any, error: LambdifyError) -> None:
        failed.append((event, error))

    async def arecord(event: Any, error: LambdifyError) -> None:
        await anyio.lowlevel.checkpoint()
        failed.append((event, error))

    @handler(max_retry_attempts=attempts, retry_delay=0.02, on_failure=record if kind == "sync" else arecord)
    def broken(event: dict[str, Any], context: LambdaContext) -> None:
        runs.append(dict(event))
        event["mutated"] = True  # every attempt still gets the event as it was accepted
        raise ValueError(f"broken {event['order']}")

    event = {"order": 42, "items": ["a", "é"]}
    try:
        async with _client(broken) as client:
            request_id = await _send_event(client, "broken", event)
            await _until(lambda: len(failed) == 1)
            await anyio.sleep(0.2)
    finally:
        await broken.ashutdown()

    assert runs == [event] * (attempts + 1)
    [(given, error)] = failed
    assert given == event
    assert isinstance(error, FunctionError) and error.error_type == "ValueError"
    assert error.error_message == "broken 42"
    [line] = _given_up(caplog)
    assert line.startswith(f"Event invocation {request_id} of broken given up after {attempts + 1} attempt(s)")
    assert f"max_retry_attempts ({attempts}) reached" in line
    assert "ValueError: broken 42" in line
    assert line.endswith("event: " + json.dumps(event))
    assert [r.levelname for r in caplog.records if r.getMessage() == line] == ["ERROR"]


@pytest.mark.anyio
async def test_a_retry_that_would_pass_max_event_age_is_not_made(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    failed: list[Any] = []

    @handler(max_event_age=60, retry_delay=61, on_failure=lambda event, error: failed.append(event))
    def old(event: Any, context: LambdaContext) -> None:
        runs.append(1)
        raise ValueError("no")

    try:
        async with _client(old) as client:
            await _send_event(client, "old", {"age": 1})
            await _until(lambda: bool(failed))
    finally:
        await old.ashutdown()

    assert runs == [1] and failed == [{"age": 1}]
    [line] = _given_up(caplog)
    assert "after 1 attempt(s), its next retry, due in 61 s, would pass max_event_age (60 s)" in line


@pytest.mark.anyio
async def test_a_throttled_event_is_tried_again_without_counting_as_an_attempt() -> None:
    release = anyio.Event()
    runs: list[str] = []

    @handler(max_contexts=1, queue_timeout=0.05, max_retry_attempts=0, concurrency=1)
    async def single(event: dict[str, str], context: LambdaContext) -> None:
        runs.append(event["who"])
        if event["who"] == "first":
            await release.wait()

    try:
        async with _client(single) as client, anyio.create_task_group() as group:
            # A RequestResponse invocation holds the only context; the Event is throttled meanwhile.
            group.start_soon(functools.partial(client.post, INVOKE.format("single"), json={"who": "first"}))
            await _until(lambda: runs == ["first"])
            await _send_event(client, "single", {"who": "event"})
            await anyio.sleep(0.3)  # several queue_timeouts: throttled, not failed
            assert runs == ["first"]
            release.set()
            await _until(lambda: runs == ["first", "event"])
    finally:
        await single.ashutdown()


@pytest.mark.anyio
async def test_on_failure_raising_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def bad_hook(event: Any, error: LambdifyError) -> None:
        raise OSError("the dead-letter queue is down")

    @handler(max_retry_attempts=0, on_failure=bad_hook)
    def broken(event: Any, context: LambdaContext) -> None:
        raise ValueError("no")

    try:
        async with _client(broken) as client:
            await _send_event(client, "broken", {"x": 1})
            await _until(lambda: any("on_failure of broken raised" in r.getMessage() for r in caplog.records))
            assert (await client.post(INVOKE.format("broken"), json={})).status_code == 200  # still serving
    finally:
        await broken.ashutdown()
    [record] = [r for r in caplog.records if "on_failure of broken raised" in r.getMessage()]
    assert record.exc_info is not None and "dead-letter queue is down" in str(record.exc_info[1])
    assert len(_given_up(caplog)) == 1


@pytest.mark.anyio
async def test_retries_not_yet_due_at_shutdown_are_given_up_with_their_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    failed: list[Any] = []

    @handler(retry_delay=600, on_failure=lambda event, error: failed.append(event))
    def later(event: dict[str, int], context: LambdaContext) -> None:
        runs.append(event["n"])
        raise ValueError(f"failed {event['n']}")

    try:
        started = time.monotonic()
        async with _client(later) as client:
            for n in range(3):
                await _send_event(client, "later", {"n": n})
            await _until(lambda: len(runs) == 3)
            await anyio.sleep(0.05)
            assert failed == []
        took = time.monotonic() - started  # the lifespan's shutdown did not wait 600 s
    finally:
        await later.ashutdown()

    assert took < 10
    assert sorted(event["n"] for event in failed) == [0, 1, 2]
    lines = _given_up(caplog)
    assert len(lines) == 3
    for n in range(3):
        [line] = [line for line in lines if line.endswith("event: " + json.dumps({"n": n}))]
        assert "after 1 attempt(s), dropped at shutdown: its next retry was due in " in line
        assert f"ValueError: failed {n}" in line


@pytest.mark.anyio
async def test_an_app_started_again_retries_again() -> None:
    runs: list[int] = []

    @handler(retry_delay=0.02, max_retry_attempts=1)
    def twice(event: Any, context: LambdaContext) -> None:
        runs.append(1)
        raise ValueError("no")

    app = FunctionApp([twice])
    try:
        for round_ in (1, 2):
            transport = httpx.ASGITransport(app=app)
            async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
                await _send_event(client, "twice", {})
                await _until(lambda: len(runs) == 2 * round_)  # noqa: B023  (awaited within the iteration)
    finally:
        await twice.ashutdown()


# --- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param({"max_retry_attempts": 3}, ValueError, "max_retry_attempts must satisfy 0 <= ", id="attempts-3"),
        pytest.param({"max_retry_attempts": -1}, ValueError, "max_retry_attempts must satisfy", id="attempts-neg"),
        pytest.param({"max_retry_attempts": 1.5}, TypeError, "max_retry_attempts must be an integer", id="attempts-f"),
        pytest.param({"max_retry_attempts": True}, TypeError, "max_retry_attempts must be an integer", id="attempts-b"),
        pytest.param({"retry_delay": 0}, ValueError, "retry_delay must satisfy 0 < retry_delay", id="delay-0"),
        pytest.param({"retry_delay": "1"}, TypeError, "retry_delay must be a number", id="delay-str"),
        pytest.param({"max_event_age": 59}, ValueError, "max_event_age must satisfy 60 <= ", id="age-59"),
        pytest.param({"max_event_age": 21601}, ValueError, "max_event_age <= 21600", id="age-21601"),
        pytest.param({"on_failure": "dlq"}, TypeError, "on_failure must be a callable taking", id="on-failure"),
    ],
)
def test_bad_retry_options_fail_at_decoration_naming_the_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        handler(name="f", **options)(lambda event, context: None)


def test_retry_options_have_lambdas_defaults_and_come_from_the_environment() -> None:
    defaults = build_config("f", {}, environ={})
    assert (defaults.max_retry_attempts, defaults.retry_delay, defaults.max_event_age) == (2, 60.0, 21600.0)
    assert defaults.on_failure is None
    environ = {
        "LAMBDIFY_MAX_RETRY_ATTEMPTS": "0",
        "LAMBDIFY_RETRY_DELAY": "0.5",
        "LAMBDIFY_MAX_EVENT_AGE": "120",
        "LAMBDIFY_ON_FAILURE": "json:dumps",
    }
    config = build_config("f", {}, environ=environ)
    assert (config.max_retry_attempts, config.retry_delay, config.max_event_age) == (0, 0.5, 120.0)
    assert config.on_failure is json.dumps
    assert build_config("f", {"max_retry_attempts": 1}, environ=environ).max_retry_attempts == 1  # explicit wins
    with pytest.raises(ValueError, match="max_retry_attempts must satisfy"):
        build_config("f", {}, environ={"LAMBDIFY_MAX_RETRY_ATTEMPTS": "5"})


# --- a real `lambdify serve`, boto3 and SIGTERM ----------------------------------------------------

SERVED = """
import json, os
from lambdify import handler

RECORD = os.environ["RECORD_DIR"]

def _write(kind, payload):
    with open(os.path.join(RECORD, kind), "a") as file:
        file.write(json.dumps(payload) + "\\n")

def dead_letter(event, error):
    _write("failed", {{"event": event, "error": str(error)}})

@handler(retry_delay={delay}, on_failure=dead_letter)
def flaky(event, context):
    _write("runs", {{"event": event, "request_id": context.aws_request_id}})
    if event.get("fail_until", 99) > sum(1 for _ in open(os.path.join(RECORD, "runs"))):
        raise RuntimeError("not yet")
    return "done"
"""


def _lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _serve(tmp_path: Path, delay: float) -> Any:
    (tmp_path / "served_app.py").write_text(textwrap.dedent(SERVED.format(delay=delay)))
    command = [sys.executable, "-m", "lambdify", "serve", str(tmp_path / "served_app.py"), "--port", PORT]
    return serve_command(command, cwd=ROOT, env={"RECORD_DIR": str(tmp_path)})


def test_serve_retries_an_event_invoked_with_boto3_then_hands_it_to_on_failure(tmp_path: Path) -> None:
    with _serve(tmp_path, 0.05) as server:
        client = boto3_lambda(server.url)
        try:
            response = client.invoke(FunctionName="flaky", InvocationType="Event", Payload=b'{"fail_until": 3}')
            assert response["StatusCode"] == 202
            request_id = response["ResponseMetadata"]["RequestId"]
            _wait_for(lambda: len(_lines(tmp_path / "runs")) == 3)
            response = client.invoke(FunctionName="flaky", InvocationType="Event", Payload=b'{"always": "fails"}')
            _wait_for(lambda: bool(_lines(tmp_path / "failed")))
        finally:
            client.close()
    runs = _lines(tmp_path / "runs")
    assert [run["request_id"] for run in runs[:3]] == [request_id] * 3  # retries keep the request id
    assert len(runs) == 6  # 3 for the first event (the third succeeds), 3 for the one always failing
    assert _lines(tmp_path / "failed") == [{"event": {"always": "fails"}, "error": "RuntimeError: not yet"}]
    given_up = [line for line in server.stderr.splitlines() if "given up" in line]
    assert len(given_up) == 1 and given_up[0].endswith('event: {"always": "fails"}'), server.stderr
    assert "on_failure of flaky raised" not in server.stderr and "never retrieved" not in server.stderr, server.stderr


def test_serve_logs_retries_pending_at_sigterm_with_their_events(tmp_path: Path) -> None:
    with _serve(tmp_path, 300) as server:
        client = boto3_lambda(server.url)
        try:
            for n in range(2):
                payload = json.dumps({"pending": n}).encode()
                assert client.invoke(FunctionName="flaky", InvocationType="Event", Payload=payload)["StatusCode"] == 202
            _wait_for(lambda: len(_lines(tmp_path / "runs")) == 2)
        finally:
            client.close()
        started = time.monotonic()
        server.stop()  # SIGTERM, with both retries 300 s away
        assert time.monotonic() - started < 15
    given_up = [line for line in server.stderr.splitlines() if "dropped at shutdown" in line]
    for n in range(2):
        assert sum(line.endswith(f'event: {{"pending": {n}}}') for line in given_up) == 1, server.stderr
    assert sorted(record["event"]["pending"] for record in _lines(tmp_path / "failed")) == [0, 1]
    assert "on_failure of flaky raised" not in server.stderr and "never retrieved" not in server.stderr, server.stderr


@pytest.mark.anyio
async def test_an_event_still_running_when_shutdown_grace_passes_is_logged_with_its_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = anyio.Event()

    @handler(timeout=30, shutdown_grace=0.1)
    async def slow(event: Any, context: LambdaContext) -> None:
        started.set()
        await anyio.sleep(20)

    try:
        async with _client(slow) as client:
            await _send_event(client, "slow", {"slow": True})
            with anyio.fail_after(10):
                await started.wait()
    finally:
        await slow.ashutdown()
    [line] = [r.getMessage() for r in caplog.records if "cancelled at shutdown" in r.getMessage()]
    assert line.endswith('(shutdown_grace passed) in attempt 1; event: {"slow": true}')
