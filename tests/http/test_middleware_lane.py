"""`ASGIMiddleware`'s fast path (its lane): after a first request through the pool, requests on
the same loop take the shared context directly. Everything the general path does must still
hold there: stats, deadlines (504), errors, logs, retirement, and the next context after it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lambdify import ASGIMiddleware, current_context

Message = dict[str, Any]


async def _get(app: Any, path: str = "/") -> tuple[int | None, bytes, list[Message]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [], "http_version": "1.1", "scheme": "http", "root_path": ""}  # fmt: skip
    await app(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, sent


def _app(behaviour: dict[str, Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        lc = current_context()
        assert scope["lambdify.context"] is lc
        behaviour.setdefault("contexts", []).append(lc)
        if path == "/slow":
            await asyncio.sleep(5)
        if path == "/boom":
            raise ValueError("boom")
        if path == "/defer":
            lc.defer(behaviour.setdefault("deferred", []).append, lc.aws_request_id)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _stats(mw: ASGIMiddleware) -> dict[str, Any]:
    return mw.function.stats()


def test_requests_after_the_first_take_the_lane_and_count_as_before() -> None:
    seen: dict[str, Any] = {}
    mw = ASGIMiddleware(_app(seen), name="lane")

    async def main() -> None:
        for _ in range(5):
            assert (await _get(mw))[:2] == (200, b"ok")
        assert mw._lane is not None  # opened by the first request
        assert (await _get(mw, "/defer"))[:2] == (200, b"ok")

    asyncio.run(main())
    stats = _stats(mw)
    assert stats["invocations"] == 6
    assert stats["cold_starts"] == 1 and stats["warm_starts"] == 5
    assert stats["errors"] == 0
    contexts = {lc.execution.id for lc in seen["contexts"]}
    assert len(contexts) == 1  # one shared context
    assert len({lc.aws_request_id for lc in seen["contexts"]}) == 6
    assert seen["deferred"] == [seen["contexts"][-1].aws_request_id]  # flushed on the lane too
    recent = mw.function.recorder.invocations()
    assert [entry["request_id"] for entry in recent] == [lc.aws_request_id for lc in reversed(seen["contexts"])]
    # What the stats keep of a request does not hold on to the server's objects.
    assert all(lc._task is None and lc._send is None for lc in seen["contexts"])


def test_an_error_on_the_lane_is_the_app_s_own_and_is_counted() -> None:
    seen: dict[str, Any] = {}
    mw = ASGIMiddleware(_app(seen), name="lane_error")

    async def main() -> None:
        await _get(mw)
        assert mw._lane is not None
        with pytest.raises(ValueError, match="boom") as caught:
            await _get(mw, "/boom")
        assert caught.value.__cause__ is None and caught.value.__context__ is None
        assert (await _get(mw))[:2] == (200, b"ok")  # the context serves on

    asyncio.run(main())
    stats = _stats(mw)
    assert stats["invocations"] == 3 and stats["errors"] == 1


def test_a_timeout_on_the_lane_answers_504_and_retires_the_context() -> None:
    seen: dict[str, Any] = {}
    mw = ASGIMiddleware(_app(seen), name="lane_timeout", timeout=0.3)

    async def main() -> None:
        await _get(mw)
        lane = mw._lane
        assert lane is not None
        status, body, _ = await _get(mw, "/slow")
        assert status == 504 and b"timed out" in body
        assert lane.ctx.retired  # reset, as Lambda resets the environment after a timeout
        assert (await _get(mw))[:2] == (200, b"ok")  # the general path: a new context, cold
        assert mw._lane is not None and mw._lane.ctx is not lane.ctx

    asyncio.run(main())
    stats = _stats(mw)
    assert stats["timeouts"] == 1
    assert stats["cold_starts"] == 2
    contexts = [lc.execution.id for lc in seen["contexts"]]
    assert contexts[0] == contexts[1] != contexts[2]


def test_start_lines_on_take_the_general_path(caplog: pytest.LogCaptureFixture) -> None:
    seen: dict[str, Any] = {}
    mw = ASGIMiddleware(_app(seen), name="lane_logs")

    async def main() -> None:
        await _get(mw)
        assert mw._lane is not None
        with caplog.at_level(logging.INFO, logger="lambdify"):
            await _get(mw)

    asyncio.run(main())
    request_id = seen["contexts"][-1].aws_request_id
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert any(line.startswith("START RequestId") for line in lines)
    assert any(line.startswith("REPORT RequestId") for line in lines)


def test_a_new_loop_opens_its_own_lane() -> None:
    seen: dict[str, Any] = {}
    mw = ASGIMiddleware(_app(seen), name="lane_loops")

    async def twice() -> Any:
        await _get(mw)
        await _get(mw)
        return mw._lane

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert first is not None and second is not None and first is not second
    assert first.pool is not second.pool
    assert _stats(mw)["invocations"] == 4
