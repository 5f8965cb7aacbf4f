"""Resources: created lazily once per execution context, checked lazily, replaced when broken (DESIGN.md §2)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lambdify import ExecutionContext, Function, FunctionError, LambdaContext, handler

_serials = itertools.count()


class Thing:
    """A stand-in for a client: remembers whether it was closed.

    Tests tell objects apart by `serial`, not `id()`: a replaced object may be freed and its
    address reused by the next one.
    """

    def __init__(self, log: list[str] | None = None) -> None:
        self.serial = next(_serials)
        self.closed = False
        self._log = log

    def close(self) -> None:
        self.closed = True
        if self._log is not None:
            self._log.append(f"close {self.serial}")


def _recording_check(checked: list[int]) -> Callable[[Thing], bool]:
    def check(thing: Thing) -> bool:
        checked.append(thing.serial)
        return True

    return check


def _raised(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_created_once_and_reused_while_warm() -> None:
    made: list[Thing] = []

    def make() -> Thing:
        made.append(Thing())
        return made[-1]

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"serial": context.resources["thing"].serial}

    try:
        serials = {fn.invoke({})["serial"] for _ in range(10)}
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert len(made) == 1
    assert serials == {made[0].serial}
    assert stats["created"] == 1
    assert stats["replaced"] == 0


def test_sqlite_connection_closed_while_warm_is_replaced(tmp_path: Path) -> None:
    # sqlite3 connections are bound to the thread that made them: this only works because the
    # context runs its factory, check, handler and close on one dedicated thread.
    path = tmp_path / "app.db"
    closes: list[int] = []
    close_errors: list[BaseException] = []

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.execute("create table if not exists hits (n integer)")
        return conn

    def close(conn: sqlite3.Connection) -> None:
        closes.append(id(conn))
        try:
            conn.close()
        except BaseException as exc:
            close_errors.append(exc)
            raise

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("db", connect, check=lambda conn: conn.execute("select 1"), close=close)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        conn: sqlite3.Connection = context.resources["db"]
        with conn:
            conn.execute("insert into hits values (?)", (event["n"],))
        rows = [n for (n,) in conn.execute("select n from hits order by n")]
        if event.get("break"):
            conn.close()  # the connection dies while the context sits warm
        return {"id": id(conn), "rows": rows}

    try:
        first = fn.invoke({"n": 1, "break": True})
        second = fn.invoke({"n": 2})
        third = fn.invoke({"n": 3})
        stats = fn.stats()["resources"]["db"]
    finally:
        fn.shutdown()

    assert first["rows"] == [1]
    assert second["rows"] == [1, 2]  # a working connection to the same file
    assert third["rows"] == [1, 2, 3]
    assert second["id"] == third["id"]
    assert stats["replaced"] == 1
    assert stats["created"] == 2
    assert stats["checks"] == 2
    assert closes == [first["id"], second["id"]]  # at replacement, then at shutdown
    assert close_errors == []  # each time on the thread that created it


@pytest.mark.parametrize(
    "failure",
    [pytest.param("returns-false", id="check-returns-false"), pytest.param("raises", id="check-raises")],
)
def test_failed_check_closes_and_replaces_once(failure: str) -> None:
    log: list[str] = []
    verdicts = iter([False])

    def check(thing: Thing) -> bool:
        if next(verdicts, True):
            return True
        if failure == "raises":
            raise ConnectionError("gone")
        return False

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", lambda: Thing(log), check=check)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        thing = context.resources["thing"]
        return {"serial": thing.serial, "closed": thing.closed}

    try:
        first = fn.invoke({})
        second = fn.invoke({})
        third = fn.invoke({})
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert second["serial"] != first["serial"]
    assert third["serial"] == second["serial"]
    assert not second["closed"]
    assert log[0] == f"close {first['serial']}"  # the failed object was closed when it was replaced
    assert stats == {**stats, "created": 2, "checks": 2, "replaced": 1}


def test_a_close_that_raises_during_replacement_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lambdify")

    def close(thing: Thing) -> None:
        raise OSError(f"cannot close {thing.serial}")

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", Thing, check=lambda thing: thing.serial < 0, close=close)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return context.resources["thing"].serial

    try:
        first = fn.invoke({})
        second = fn.invoke({})  # the check fails, close raises: the caller still gets a new object
    finally:
        fn.shutdown()

    assert second != first
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("lambdify")]
    assert any("thing" in m for m in messages), messages
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(str(exc) == f"cannot close {first}" for exc in logged), logged


@pytest.mark.services
def test_postgres_connection_terminated_by_server_is_replaced(postgres_dsn: str) -> None:
    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add(
            "pg",
            lambda: psycopg.connect(postgres_dsn, autocommit=True),
            check=lambda conn: conn.execute("select 1").fetchone(),
        )

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        conn: psycopg.Connection[Any] = context.resources["pg"]
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        return {"pid": row[0]}

    try:
        first = fn.invoke({})
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            terminated = admin.execute("select pg_terminate_backend(%s)", (first["pid"],)).fetchone()
            assert terminated == (True,)
            # pg_terminate_backend only signals the backend; wait until it is really gone.
            deadline = time.monotonic() + 10
            while admin.execute("select 1 from pg_stat_activity where pid = %s", (first["pid"],)).fetchone():
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.02)
        second = fn.invoke({})
        stats = fn.stats()["resources"]["pg"]
    finally:
        fn.shutdown()

    assert second["pid"] != first["pid"]
    assert stats["replaced"] == 1
    assert stats["created"] == 2


@pytest.mark.services
def test_redis_client_killed_by_server_is_replaced(redis_url: str) -> None:
    # A pooled redis-py client reconnects by itself, so a ping would pass and hide the check.
    # One connection and no retries: a killed connection makes ping() raise, and only the
    # resource check can recover.
    clients: list[redis.Redis] = []

    def connect() -> redis.Redis:
        clients.append(redis.Redis.from_url(redis_url, single_connection_client=True, retry=Retry(NoBackoff(), 0)))
        return clients[-1]

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("redis", connect, check=lambda r: r.ping())

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        client: redis.Redis = context.resources["redis"]
        client.incr(event["key"])
        return {"client_id": client.client_id(), "object": next(i for i, c in enumerate(clients) if c is client)}

    key = f"lambdify-test:{time.time_ns()}"
    admin = redis.Redis.from_url(redis_url)
    try:
        first = fn.invoke({"key": key})
        assert admin.execute_command("CLIENT", "KILL", "ID", first["client_id"]) == 1
        second = fn.invoke({"key": key})
        stats = fn.stats()["resources"]["redis"]
        assert admin.get(key) == b"2"
    finally:
        fn.shutdown()
        admin.delete(key)
        admin.close()

    assert second["client_id"] != first["client_id"]
    assert (first["object"], second["object"]) == (0, 1)  # a new client object, not a silent reconnect
    assert stats["replaced"] == 1
    assert stats["created"] == 2


def test_check_after_skips_the_check_for_a_recently_used_resource() -> None:
    checked: list[int] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", Thing, check=_recording_check(checked), check_after=60)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return context.resources["thing"].serial

    try:
        serials = {fn.invoke({}), fn.invoke({})}
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert len(serials) == 1
    assert checked == []
    assert stats["checks"] == 0


def test_check_runs_once_the_resource_has_been_idle_check_after_seconds() -> None:
    checked: list[int] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", Thing, check=_recording_check(checked), check_after=0.3)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return context.resources["thing"].serial

    try:
        first = fn.invoke({})
        assert fn.invoke({}) == first
        assert checked == []
        time.sleep(0.4)
        assert fn.invoke({}) == first
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert checked == [first]
    assert stats["checks"] == 1


def test_check_runs_once_per_invocation_however_often_the_handler_accesses() -> None:
    checked: list[int] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", Thing, check=_recording_check(checked), check_after=0)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return len({context.resources["thing"].serial for _ in range(5)})

    try:
        results = [fn.invoke({}) for _ in range(4)]  # one cold, three warm
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert results == [1, 1, 1, 1]
    assert len(checked) == 3  # a freshly created object needs no check
    assert stats["checks"] == 3
    assert stats["created"] == 1


def test_max_age_recreates_an_old_resource() -> None:
    log: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", lambda: Thing(log), max_age=0.5)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return context.resources["thing"].serial

    try:
        first = fn.invoke({})
        again = fn.invoke({})
        time.sleep(0.6)
        later = fn.invoke({})
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert again == first
    assert later != first
    assert log[0] == f"close {first}"  # the expired object was closed
    assert stats["created"] == 2


def test_invalidate_closes_now_and_the_next_access_recreates() -> None:
    log: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", lambda: Thing(log))  # default close: obj.close()

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        before = context.resources["thing"]
        if not event.get("invalidate"):
            return {"before": before.serial}
        context.resources.invalidate("thing")
        closed_at_once = before.closed
        after = context.resources["thing"]
        return {"before": before.serial, "closed_at_once": closed_at_once, "after": after.serial}

    try:
        first = fn.invoke({})
        second = fn.invoke({"invalidate": True})
        third = fn.invoke({})
        stats = fn.stats()["resources"]["thing"]
    finally:
        fn.shutdown()

    assert second["before"] == first["before"]
    assert second["closed_at_once"] is True
    assert second["after"] != first["before"]
    assert third["before"] == second["after"]
    assert stats["created"] == 2
    assert log == [f"close {first['before']}", f"close {second['after']}"]  # the second one at shutdown


def test_eager_resource_is_created_during_init() -> None:
    made: list[Thing] = []

    def make() -> Thing:
        made.append(Thing())
        return made[-1]

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make, eager=True)
        ctx.resources.add("lazy", Thing)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        made_before_access = len(made)
        thing = context.resources["thing"]
        return {"made_before_access": made_before_access, "same": thing is made[0], "cold": context.cold_start}

    try:
        result = fn.invoke({})
        stats = fn.stats()["resources"]
    finally:
        fn.shutdown()

    assert result == {"made_before_access": 1, "same": True, "cold": True}
    assert stats["thing"]["created"] == 1
    assert stats.get("lazy", {}).get("created", 0) == 0  # not eager, never touched


def test_custom_close_runs_at_shutdown_and_a_failing_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lambdify")
    closed: list[str] = []

    def broken_close(thing: Thing) -> None:
        closed.append("broken")
        raise RuntimeError("close exploded")

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("good", Thing, close=lambda thing: closed.append("good"))
        ctx.resources.add("broken", Thing, close=broken_close)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return len({context.resources["good"].serial, context.resources["broken"].serial})

    try:
        assert fn.invoke({}) == 2
        assert closed == []
    finally:
        fn.shutdown()  # must not raise

    assert sorted(closed) == ["broken", "good"]
    failures = [r for r in caplog.records if r.name.startswith("lambdify") and "broken" in r.getMessage()]
    assert failures, [r.getMessage() for r in caplog.records]
    assert failures[0].levelno >= logging.WARNING
    assert failures[0].exc_info is not None and "close exploded" in str(failures[0].exc_info[1])


class AsyncThing:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.closed = False

    async def ping(self) -> bool:
        await asyncio.sleep(0)
        self.log.append("ping")
        return not self.closed

    async def aclose(self) -> None:
        await asyncio.sleep(0)  # only recorded if the coroutine is really awaited
        self.closed = True
        self.log.append(f"aclose {id(self)}")


@pytest.mark.anyio
async def test_async_factory_check_and_aclose() -> None:
    log: list[str] = []

    async def make() -> AsyncThing:
        await asyncio.sleep(0)
        log.append("make")
        return AsyncThing(log)

    async def check(thing: AsyncThing) -> bool:
        return await thing.ping()

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make, check=check)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> int:
        thing = await context.resources.aget("thing")
        assert isinstance(thing, AsyncThing)
        return id(thing)

    try:
        first = await fn.ainvoke({})
        second = await fn.ainvoke({})
        stats = fn.stats()["resources"]["thing"]
    finally:
        await fn.ashutdown()

    assert first == second
    assert log == ["make", "ping", f"aclose {first}"]
    assert stats["created"] == 1
    assert stats["checks"] == 1


def test_async_resource_with_sync_invoke_awaits_aclose_at_shutdown() -> None:
    log: list[str] = []

    async def make() -> AsyncThing:
        return AsyncThing(log)

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return id(await context.resources.aget("thing"))

    try:
        first = fn.invoke({})
        assert fn.invoke({}) == first
    finally:
        fn.shutdown()

    assert log == [f"aclose {first}"]


def _eager_async_function() -> tuple[Function[Any], list[AsyncThing]]:
    made: list[AsyncThing] = []

    async def make() -> AsyncThing:
        await asyncio.sleep(0)
        made.append(AsyncThing([]))
        return made[-1]

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make, eager=True)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        made_before_access = len(made)
        thing = await context.resources.aget("thing")
        return {"made_before_access": made_before_access, "same": thing is made[0]}

    return fn, made


def test_eager_async_resource_is_created_during_init_with_invoke() -> None:
    fn, made = _eager_async_function()
    try:
        result = fn.invoke({})
    finally:
        fn.shutdown()

    assert result == {"made_before_access": 1, "same": True}
    assert made[0].closed


@pytest.mark.anyio
async def test_eager_async_resource_is_created_during_init_with_ainvoke() -> None:
    fn, made = _eager_async_function()
    try:
        result = await fn.ainvoke({})
    finally:
        await fn.ashutdown()

    assert result == {"made_before_access": 1, "same": True}
    assert made[0].closed


@pytest.mark.anyio
async def test_sync_access_to_an_async_resource_raises_type_error_naming_aget() -> None:
    async def make() -> AsyncThing:
        return AsyncThing([])

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        try:
            context.resources["thing"]
        except TypeError as exc:
            return str(exc)
        return "no error"

    try:
        message = await fn.ainvoke({})
    finally:
        await fn.ashutdown()

    assert "aget" in message
    # The factory's coroutine was not left un-awaited: filterwarnings=error would turn its
    # RuntimeWarning into a failure.


def test_unknown_resource_name_raises_key_error_naming_it() -> None:
    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("db", Thing)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return context.resources["no-such-thing"]

    try:
        with pytest.raises(FunctionError) as info:
            fn.invoke({})
    finally:
        fn.shutdown()

    assert info.value.error_type == "KeyError"
    assert "no-such-thing" in info.value.error_message
    assert isinstance(info.value.__cause__, KeyError)


def test_add_rejects_a_duplicate_name_and_a_non_callable_factory() -> None:
    errors: dict[str, BaseException | None] = {}

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("db", Thing)
        errors["duplicate"] = _raised(lambda: ctx.resources.add("db", Thing))
        errors["not callable"] = _raised(lambda: ctx.resources.add("cache", "redis://"))  # type: ignore[arg-type]

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> bool:
        return isinstance(context.resources["db"], Thing)

    try:
        assert fn.invoke({}) is True
    finally:
        fn.shutdown()

    assert isinstance(errors["duplicate"], ValueError)
    assert "db" in str(errors["duplicate"])
    assert isinstance(errors["not callable"], TypeError)
    assert "cache" in str(errors["not callable"])


@pytest.mark.anyio
async def test_tasks_started_by_a_resource_are_not_the_invocations_background_work() -> None:
    # A pool's maintenance task belongs to the resource, which outlives the invocation that
    # happened to create it: the invocation must not wait for it.
    import asyncio

    started: list[asyncio.Task[None]] = []

    class Pool:
        def __init__(self) -> None:
            self.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
            started.append(self.task)

        async def aclose(self) -> None:
            self.task.cancel()

    async def make_pool() -> Pool:
        return Pool()

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("pool", make_pool)

    @handler(init=setup, timeout=2)
    async def use(event: Any, context: LambdaContext) -> str:
        pool = await context.resources.aget("pool")
        return type(pool).__name__

    try:
        assert await use.ainvoke({}) == "Pool"  # would time out if the task counted as the invocation's
        assert started and not started[0].done()
    finally:
        await use.ashutdown()
    assert started[0].cancelled() or started[0].done()
