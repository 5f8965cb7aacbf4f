from __future__ import annotations

import asyncio
import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

import lambdify
from lambdify import (
    ExecutionContext,
    Function,
    FunctionError,
    InitError,
    LambdaContext,
    current_context,
    handler,
)


def test_bare_decorator_uses_lambda_defaults(functions: list[Function[Any]]) -> None:
    @handler
    def echo(event: Any, context: LambdaContext) -> Any:
        return event

    functions.append(echo)
    assert isinstance(echo, Function)
    assert echo.config.name == "echo"
    assert echo.config.timeout == 3
    assert echo.config.memory_mb is None
    assert echo.config.tmp_mb == 512
    assert echo.invoke({"x": [1, 2]}) == {"x": [1, 2]}
    assert echo.__name__ == "echo"


def test_options_and_async_handler(functions: list[Function[Any]]) -> None:
    @handler(name="fetch-1", timeout=5, memory_mb=256, tmp_mb=64)
    async def fetch(event: Any, context: LambdaContext) -> Any:
        await asyncio.sleep(0)
        return {
            "name": context.function_name,
            "memory": context.memory_limit_in_mb,
            "version": context.function_version,
            "arn": context.invoked_function_arn,
            "group": context.log_group_name,
            "remaining": context.get_remaining_time_in_millis(),
        }

    functions.append(fetch)
    result = fetch.invoke({})
    assert result["name"] == "fetch-1"
    assert result["memory"] == 256
    assert result["version"] == "$LATEST"
    assert result["arn"].endswith(":function:fetch-1")
    assert result["group"] == "/aws/lambda/fetch-1"
    assert 0 < result["remaining"] <= 5000


def test_lambda_context_attributes(functions: list[Function[Any]]) -> None:
    seen: dict[str, Any] = {}

    @handler
    def look(event: Any, context: LambdaContext) -> None:
        seen["context"] = context
        seen["request_ids"] = context.aws_request_id
        seen["current"] = current_context()

    functions.append(look)
    look.invoke({})
    context = seen["context"]
    assert seen["current"] is context
    assert len(context.aws_request_id) == 36 and context.aws_request_id.count("-") == 4
    assert context.aws_request_id[14] == "4"  # a uuid4
    assert context.memory_limit_in_mb == 128
    assert context.identity is None and context.client_context is None
    assert context.log_stream_name.endswith(context.execution.id)
    assert isinstance(context.execution, ExecutionContext)
    assert context.resources is context.execution.resources
    assert 0 < context.get_remaining_time_in_millis() <= 3000


def test_current_context_outside_an_invocation() -> None:
    with pytest.raises(LookupError):
        current_context()


def test_init_runs_once_for_100_sequential_invocations(functions: list[Function[Any]]) -> None:
    inits: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)
        ctx.state.greeting = "hi"

    @handler(init=setup)
    def greet(event: Any, context: LambdaContext) -> Any:
        return [context.cold_start, context.execution.state.greeting]

    functions.append(greet)
    results = [greet.invoke({}) for _ in range(100)]
    assert len(inits) == 1
    assert results[0] == [True, "hi"]
    assert all(result == [False, "hi"] for result in results[1:])
    stats = greet.stats()
    assert (stats["invocations"], stats["cold_starts"], stats["warm_starts"]) == (100, 1, 99)


@pytest.mark.anyio
async def test_concurrent_ainvoke_creates_one_context_each(functions: list[Function[Any]]) -> None:
    inits: list[str] = []
    gate = asyncio.Event()

    async def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup)
    async def wait(event: Any, context: LambdaContext) -> Any:
        await gate.wait()
        return context.execution.id

    functions.append(wait)

    async def open_gate() -> None:
        for _ in range(1000):  # bounded: the six INITs happen within a few event-loop turns
            if len(inits) == 6:
                break
            await asyncio.sleep(0.01)
        gate.set()

    *ids, _ = await asyncio.gather(*(wait.ainvoke({}) for _ in range(6)), open_gate())
    assert sorted(ids) == sorted(inits)
    assert len(set(inits)) == 6
    await wait.ashutdown()


def test_init_decorator_and_class_form(functions: list[Function[Any]]) -> None:
    closed: list[str] = []

    @handler(timeout=10)
    class Classifier:
        def __init__(self, ctx: ExecutionContext) -> None:
            self.model = {"cat": 1}
            self.ctx = ctx
            self.made_with = ctx.state.prepared

        def __call__(self, event: Any, context: LambdaContext) -> Any:
            return {"score": self.model.get(event["label"], 0), "prepared": self.made_with}

        def close(self) -> None:
            closed.append(self.ctx.id)

    functions.append(Classifier)

    @Classifier.init
    def prepare(ctx: ExecutionContext) -> None:
        ctx.state.prepared = True

    assert Classifier.invoke({"label": "cat"}) == {"score": 1, "prepared": True}
    assert Classifier.invoke({"label": "dog"}) == {"score": 0, "prepared": True}
    assert closed == []
    Classifier.shutdown()
    assert len(closed) == 1


def test_async_class_form(functions: list[Function[Any]]) -> None:
    @handler
    class Doubler:
        def __init__(self, ctx: ExecutionContext) -> None:
            self.factor = 2

        async def __call__(self, event: Any, context: LambdaContext) -> Any:
            await asyncio.sleep(0)
            return event * self.factor

    functions.append(Doubler)
    assert Doubler.engine.is_async
    assert Doubler.invoke(21) == 42


def test_sync_handler_affinity_one_thread_per_context(functions: list[Function[Any]]) -> None:
    threads: set[int] = set()

    def setup(ctx: ExecutionContext) -> None:
        threads.add(threading.get_ident())

    @handler(init=setup)
    def where(event: Any, context: LambdaContext) -> None:
        threads.add(threading.get_ident())
        context.defer(lambda: threads.add(threading.get_ident()))

    functions.append(where)
    for _ in range(5):
        where.invoke({})
    assert len(threads) == 1
    assert threading.get_ident() not in threads


def test_handler_error_becomes_function_error(functions: list[Function[Any]]) -> None:
    @handler
    def boom(event: Any, context: LambdaContext) -> None:
        raise ValueError("no good")

    functions.append(boom)
    with pytest.raises(FunctionError) as caught:
        boom.invoke({})
    error = caught.value
    assert error.error_type == "ValueError"
    assert error.error_message == "no good"
    assert isinstance(error.__cause__, ValueError)
    assert error.request_id and len(error.request_id) == 36
    assert any("raise ValueError" in line for line in error.stack_trace)
    package = os.path.join(os.path.dirname(os.path.realpath(lambdify.__file__)), "")
    assert not any(package in line for line in error.stack_trace)  # (lambdify's own frames are left out)
    # The context survives a handler error, as on Lambda.
    assert boom.stats()["errors"] == 1
    assert boom.stats()["contexts_alive"] == 1


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param({"when": object()}, id="object"),
        pytest.param({"raw": b"\xff"}, id="bytes-not-utf8"),
        # shapes that a quick check of plain objects looks at before the encoder does
        pytest.param({"headers": {"x-when": object()}}, id="object-in-object"),
        pytest.param({"cookies": ["a=b", object()]}, id="object-in-array"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
        pytest.param({"headers": {"x": {1, 2}}}, id="set-in-object"),
        pytest.param({"deep": [{"x": object()}]}, id="object-in-object-in-array"),
    ],
)
def test_non_json_result_is_a_marshal_error(functions: list[Function[Any]], result: Any) -> None:
    @handler
    def bad(event: Any, context: LambdaContext) -> Any:
        return result

    functions.append(bad)
    with pytest.raises(FunctionError) as caught:
        bad.invoke({})
    assert caught.value.error_type == "Runtime.MarshalError"
    assert "Unable to marshal response" in caught.value.error_message


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"statusCode": 200, "headers": {"x": "y"}, "cookies": ["a=b"], "body": "hi"}, id="http"),
        pytest.param({1: "int keys", None: "null key", 2.5: "float key"}, id="non-string-keys"),
        pytest.param({"n": float("nan"), "big": 10**30, "ok": True, "none": None}, id="scalars"),
        pytest.param({"a": {"b": {"c": [1, {"d": None}]}}}, id="nested"),
    ],
)
def test_json_results_are_returned_as_they_are(functions: list[Function[Any]], result: Any) -> None:
    @handler
    def good(event: Any, context: LambdaContext) -> Any:
        return result

    functions.append(good)
    assert good.invoke({}) is result


def test_non_json_event_is_rejected(functions: list[Function[Any]]) -> None:
    @handler
    def echo(event: Any, context: LambdaContext) -> Any:
        return event

    functions.append(echo)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        echo.invoke({"x": {1, 2}})


def test_init_error_then_init_runs_again(functions: list[Function[Any]]) -> None:
    attempts: list[int] = []

    def setup(ctx: ExecutionContext) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database not ready")

    @handler(init=setup)
    def work(event: Any, context: LambdaContext) -> Any:
        return context.cold_start

    functions.append(work)
    with pytest.raises(InitError) as caught:
        work.invoke({})
    assert caught.value.error_type == "Runtime.InitError"
    assert "database not ready" in caught.value.error_message
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert work.invoke({}) is True
    assert len(attempts) == 2
    assert work.stats()["init_errors"] == 1


def test_init_timeout_is_an_init_error(functions: list[Function[Any]]) -> None:
    release = threading.Event()

    def setup(ctx: ExecutionContext) -> None:
        release.wait(5)

    @handler(init=setup, init_timeout=0.2)
    def work(event: Any, context: LambdaContext) -> None:
        return None

    functions.append(work)
    with pytest.raises(InitError, match="Init timed out after 0.20 seconds"):
        work.invoke({})
    release.set()


@pytest.mark.anyio
async def test_async_init_timeout(functions: list[Function[Any]]) -> None:
    async def setup(ctx: ExecutionContext) -> None:
        await asyncio.sleep(5)

    @handler(init=setup, init_timeout=0.2)
    async def work(event: Any, context: LambdaContext) -> None:
        return None

    functions.append(work)
    with pytest.raises(InitError, match="Init timed out"):
        await work.ainvoke({})
    await work.ashutdown()


def test_entry_point_off_aws_uses_the_given_context(functions: list[Function[Any]]) -> None:
    @handler(timeout=30)
    def look(event: Any, context: LambdaContext) -> Any:
        return [context.aws_request_id, context.get_remaining_time_in_millis()]

    functions.append(look)
    given = SimpleNamespace(aws_request_id="req-123", get_remaining_time_in_millis=lambda: 2000)
    request_id, remaining = look(event={}, context=given)
    assert request_id == "req-123"
    assert 1000 < remaining <= 2000
    request_id, _ = look({}, None)
    assert len(request_id) == 36


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        pytest.param({"timeout": 0}, ValueError, "timeout", id="timeout-zero"),
        pytest.param({"timeout": 901}, ValueError, "timeout", id="timeout-over-900"),
        pytest.param({"timeout": "3"}, TypeError, "timeout", id="timeout-string"),
        pytest.param({"memory_mb": 64}, ValueError, "memory_mb", id="memory-below-128"),
        pytest.param({"memory_mb": 20000}, ValueError, "memory_mb", id="memory-over-10240"),
        pytest.param({"memory_mb": 256.5}, TypeError, "memory_mb", id="memory-float"),
        pytest.param({"tmp_mb": 0}, ValueError, "tmp_mb", id="tmp-zero"),
        pytest.param({"init": 5}, TypeError, "init", id="init-not-callable"),
        pytest.param({"init_timeout": -1}, ValueError, "init_timeout", id="init-timeout-negative"),
        pytest.param({"idle_ttl": 0}, ValueError, "idle_ttl", id="idle-ttl-zero"),
        pytest.param({"concurrency": 0}, ValueError, "concurrency", id="concurrency-zero"),
        pytest.param({"max_contexts": 0}, ValueError, "max_contexts", id="max-contexts-zero"),
        pytest.param({"queue_timeout": -0.5}, ValueError, "queue_timeout", id="queue-timeout-negative"),
        pytest.param({"provisioned": -1}, ValueError, "provisioned", id="provisioned-negative"),
        pytest.param({"provisioned": 5, "max_contexts": 2}, ValueError, "provisioned", id="provisioned-over-max"),
        pytest.param({"isolation": "fiber"}, ValueError, "isolation", id="isolation-unknown"),
        pytest.param({"event_format": "v3"}, ValueError, "event_format", id="event-format-unknown"),
        pytest.param({"stray_tasks": "ignore"}, ValueError, "stray_tasks", id="stray-tasks-unknown"),
        pytest.param({"name": "has space"}, ValueError, "name", id="name-space"),
        pytest.param({"name": "x" * 65}, ValueError, "name", id="name-too-long"),
        pytest.param({"colour": "red"}, TypeError, "colour", id="unknown-option"),
    ],
)
def test_invalid_options_fail_at_decoration(options: dict[str, Any], error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):

        @handler(**options)
        def fn(event: Any, context: LambdaContext) -> None:
            return None


def test_sync_handler_with_concurrency_is_rejected() -> None:
    with pytest.raises(ValueError, match="concurrency"):

        @handler(concurrency=2)
        def fn(event: Any, context: LambdaContext) -> None:
            return None


def test_options_from_environment(monkeypatch: pytest.MonkeyPatch, functions: list[Function[Any]]) -> None:
    monkeypatch.setenv("LAMBDIFY_TIMEOUT", "10")
    monkeypatch.setenv("LAMBDIFY_MEMORY_MB", "512")
    monkeypatch.setenv("LAMBDIFY_MAX_CONTEXTS", "none")

    @handler(memory_mb=256)
    def fn(event: Any, context: LambdaContext) -> Any:
        return context.memory_limit_in_mb

    functions.append(fn)
    assert fn.config.timeout == 10.0
    assert fn.config.memory_mb == 256  # explicit arguments win
    assert fn.config.max_contexts is None
    monkeypatch.setenv("LAMBDIFY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="LAMBDIFY_TIMEOUT"):

        @handler
        def other(event: Any, context: LambdaContext) -> None:
            return None


def test_handler_and_options_together_is_an_error() -> None:
    def fn(event: Any, context: LambdaContext) -> None:
        return None

    with pytest.raises(TypeError):
        handler(fn, timeout=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        handler(42)  # type: ignore[call-overload]


def test_invoke_of_async_handler_from_its_own_loop_is_refused(functions: list[Function[Any]]) -> None:
    @handler
    async def inner(event: Any, context: LambdaContext) -> Any:
        return 1

    @handler
    async def outer(event: Any, context: LambdaContext) -> Any:
        return inner.invoke({})

    functions.extend([inner, outer])
    with pytest.raises(FunctionError, match="deadlock"):
        outer.invoke({})


def test_request_ids_are_distinct_uuid4s() -> None:
    import uuid

    from lambdify.core.current import new_request_id

    ids = [new_request_id() for _ in range(1000)]  # several batches
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, request_id)
