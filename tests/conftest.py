from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from lambdify import Function
from lambdify.core import memory

REQUIRE_SERVICES = os.environ.get("LAMBDIFY_REQUIRE_SERVICES") == "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, in CI with LAMBDIFY_REQUIRE_SERVICES=1, fail) when a local service is down."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and LAMBDIFY_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


@pytest.fixture
def functions() -> Iterator[list[Function[Any]]]:
    """Functions a test makes and appends here are shut down after it."""
    made: list[Function[Any]] = []
    yield made
    for fn in made:
        fn.shutdown()


@pytest.fixture
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get("LAMBDIFY_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return os.environ.get("LAMBDIFY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Options may come from LAMBDIFY_* variables; tests must not inherit the caller's.
    for key in list(os.environ):
        if (
            key.startswith("LAMBDIFY_")
            and key not in ("LAMBDIFY_REQUIRE_SERVICES",)
            and not key.startswith("LAMBDIFY_TEST_")
        ):
            monkeypatch.delenv(key)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    # A function with `memory_mb` lowers this process's RLIMIT_DATA (the memory backstop): put it
    # back, or whichever test runs next may be unable to start a thread.
    limit = resource.getrlimit(resource.RLIMIT_DATA)
    backstop = memory._backstop_mb
    yield
    if resource.getrlimit(resource.RLIMIT_DATA) != limit:
        resource.setrlimit(resource.RLIMIT_DATA, limit)
    memory._backstop_mb = backstop
