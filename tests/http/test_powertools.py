"""AWS Lambda Powertools' decorators work unchanged on a lambdify handler (DESIGN.md §2 "LambdaContext")."""

from __future__ import annotations

import importlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from lambdify import LambdaContext, handler


@pytest.fixture(autouse=True)
def _powertools_cold_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Powertools tracks "cold start" in module globals, once per process; each test is a fresh "process".
    monkeypatch.setattr(importlib.import_module("aws_lambda_powertools.logging.logger"), "is_cold_start", True)
    monkeypatch.setattr(
        importlib.import_module("aws_lambda_powertools.metrics.provider.cold_start"), "is_cold_start", True
    )
    for name in ("AWS_LAMBDA_INITIALIZATION_TYPE", "POWERTOOLS_DEV", "POWERTOOLS_METRICS_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    yield


def _json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def test_logger_inject_lambda_context() -> None:
    service = f"lambdify-test-{uuid.uuid4().hex[:8]}"
    buffer = io.StringIO()
    logger = Logger(service=service, logger_handler=logging.StreamHandler(buffer))

    @handler(name="powertools-logger")
    @logger.inject_lambda_context
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.info("inside", extra={"n": event["n"]})
        return {
            "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "cold": context.cold_start,
        }

    try:
        first = fn.invoke({"n": 1})
        second = fn.invoke({"n": 2})
    finally:
        fn.shutdown()
        logging.getLogger(service).handlers.clear()

    records = [r for r in _json_lines(buffer.getvalue()) if r.get("message") == "inside"]
    assert [r["n"] for r in records] == [1, 2]
    for record, result in zip(records, (first, second), strict=True):
        assert record["function_name"] == "powertools-logger"
        assert record["function_request_id"] == result["request_id"]
        assert record["function_arn"] == result["arn"]
        assert record["function_memory_size"] == result["memory"]
        assert record["service"] == service
    assert first["request_id"] != second["request_id"]
    assert [r["cold_start"] for r in records] == [True, False]
    assert [first["cold"], second["cold"]] == [True, False]  # powertools agrees with lambdify


def _cold_start_blobs(text: str) -> list[dict[str, Any]]:
    blobs = []
    for record in _json_lines(text):
        directives = record.get("_aws", {}).get("CloudWatchMetrics", [])
        if any(metric["Name"] == "ColdStart" for d in directives for metric in d["Metrics"]):
            blobs.append(record)
    return blobs


def test_metrics_log_metrics_captures_cold_start(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics(namespace="LambdifyTests", service="lambdify-test")

    @handler(name="powertools-metrics")
    @metrics.log_metrics(capture_cold_start_metric=True)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
        return {"cold": context.cold_start}

    try:
        capsys.readouterr()
        assert fn.invoke({}) == {"cold": True}
        first = capsys.readouterr().out
        assert fn.invoke({}) == {"cold": False}
        second = capsys.readouterr().out
    finally:
        fn.shutdown()
        metrics.clear_metrics()

    blobs = _cold_start_blobs(first)
    assert len(blobs) == 1, first
    assert blobs[0]["function_name"] == "powertools-metrics"
    assert blobs[0]["service"] == "lambdify-test"
    assert blobs[0]["ColdStart"] == [1.0]
    assert _cold_start_blobs(second) == []
    # The handler's own metric was flushed on both invocations.
    invocations = [r for r in _json_lines(first + second) if "Invocations" in r]
    assert len(invocations) == 2
