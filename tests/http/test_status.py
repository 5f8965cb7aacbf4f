"""The status endpoints (DESIGN.md §10): `stats.json`, `metrics`, and every worker's contexts."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import PORT, serve_command

from lambdify import FunctionApp, handler
from lambdify.http.workers import merge

INVOKE = "/2015-03-31/functions/{}/invocations"


@handler(name="hello")
def hello(event: Any, context: Any) -> dict[str, bool]:
    if event.get("fail"):
        raise ValueError("bad input")
    return {"ok": True}


@pytest.fixture
def fresh_hello() -> Any:
    yield hello
    hello.shutdown()


async def _six_invocations(client: httpx.AsyncClient) -> None:
    for event in [{}] * 5 + [{"fail": True}]:
        await client.post(INVOKE.format("hello"), json=event)


@pytest.mark.anyio
async def test_stats_json_counts_and_metrics_parse(fresh_hello: Any) -> None:
    before = hello.stats()["invocations"]
    assert before == 0
    app = FunctionApp([hello], status=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await _six_invocations(client)
        stats = (await client.get("/_lambdify/stats.json")).json()["functions"]["hello"]
        metrics = await client.get("/_lambdify/metrics")
        page = await client.get("/_lambdify/")
        bare = await client.get("/_lambdify")
    assert stats["invocations"] == 6 and stats["errors"] == 1 and stats["cold_starts"] >= 1
    [context] = stats["contexts"]
    assert context["state"] == "idle" and context["invocations"] == 6 and context["last_ms"] is not None
    assert [item["outcome"] for item in stats["recent"]] == ["error"] + ["success"] * 5
    assert sum(stats["latency"]["counts"]) == 6
    # (the log lines the loggers let through: here only the error, the `lambdify` logger being at WARNING)
    assert any("ValueError: bad input" in line for line in stats["recent"][0]["log"])

    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    label = (("function", "hello"),)
    assert samples[("lambdify_invocations_total", label)] == 6
    assert samples[("lambdify_errors_total", label)] == 1
    assert samples[("lambdify_invocation_duration_seconds_count", label)] == 6
    assert samples[("lambdify_invocation_duration_seconds_bucket", (("function", "hello"), ("le", "+Inf")))] == 6

    assert page.status_code == 200 and b"<svg" not in page.content[:100] and b"stats.json" in page.content
    assert bare.status_code == 307 and bare.headers["location"] == "/_lambdify/"


@pytest.mark.anyio
async def test_status_is_off_by_default(fresh_hello: Any) -> None:
    app = FunctionApp([hello])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/_lambdify/stats.json")).status_code == 404
        assert (await client.get("/_lambdify/metrics")).status_code == 404


def test_merge_sums_counters_and_histograms_and_keeps_every_context() -> None:
    def worker(pid: int, invocations: int, start: float) -> dict[str, Any]:
        return {
            "f": {
                "invocations": invocations,
                "errors": 1,
                "init_ms_last": 2.0,
                "contexts": [{"id": str(pid), "pid": pid}],
                "recent": [{"request_id": str(pid), "start": start}],
                "latency": {"bounds_ms": [1.0], "counts": [invocations, 0], "sum_ms": 0.5},
            }
        }

    merged = merge([worker(1, 2, 10.0), worker(2, 3, 20.0)])["f"]
    assert merged["invocations"] == 5 and merged["errors"] == 2
    assert [ctx["pid"] for ctx in merged["contexts"]] == [1, 2]
    assert [item["request_id"] for item in merged["recent"]] == ["2", "1"]
    assert merged["latency"]["counts"] == [5, 0] and merged["latency"]["sum_ms"] == 1.0


SLOW = """
import time

from lambdify import handler


@handler(name="hello", timeout=10)
def hello(event, context):
    time.sleep(event.get("sleep", 0))
    return {"ok": True}
"""


def _serve(tmp_path: Path, *args: str) -> Any:
    (tmp_path / "slow.py").write_text(textwrap.dedent(SLOW))
    command = [sys.executable, "-m", "lambdify", "serve", "slow.py", "--port", PORT, *args]
    return serve_command(command, cwd=tmp_path)


def test_every_workers_contexts_appear_whichever_worker_answers(tmp_path: Path) -> None:
    with _serve(tmp_path, "--workers", "2") as server:
        url = server.url + INVOKE.format("hello")
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=20) as client, ThreadPoolExecutor(8) as pool:
            while len(pids) < 2 and time.monotonic() < deadline:
                list(pool.map(lambda _: httpx.post(url, json={"sleep": 0.3}, timeout=20), range(8)))
                time.sleep(0.6)  # (each worker republishes within PUBLISH_EVERY)
                answers = [client.get(server.url + "/_lambdify/stats.json").json() for _ in range(4)]
                for answer in answers:
                    pids |= {ctx["pid"] for ctx in answer["functions"]["hello"]["contexts"]}
            assert len(pids) == 2, pids
            answers = [client.get(server.url + "/_lambdify/stats.json").json() for _ in range(4)]
        totals = {answer["functions"]["hello"]["invocations"] for answer in answers}
        assert len(totals) == 1  # every worker tells the same totals
    assert "Traceback" not in server.stderr


def test_status_can_be_switched_off(tmp_path: Path) -> None:
    with _serve(tmp_path, "--no-status") as server:
        assert httpx.get(server.url + "/_lambdify/stats.json").status_code == 404
    assert "status:" not in server.stdout


def test_json_is_well_formed_while_serving(tmp_path: Path) -> None:
    with _serve(tmp_path) as server:
        httpx.post(server.url + INVOKE.format("hello"), json={})
        answer = httpx.get(server.url + "/_lambdify/stats.json")
    assert json.loads(answer.text)["functions"]["hello"]["invocations"] == 1
    assert "status: http://127.0.0.1" in server.stdout
