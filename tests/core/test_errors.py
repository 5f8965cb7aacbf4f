"""The error tree (DESIGN.md §2 Errors): types, fields, wire format, pickling."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import pytest

from lambdify import (
    FunctionError,
    InitError,
    InvocationTimeout,
    LambdifyError,
    MemoryLimitExceeded,
    TooManyRequests,
    handler,
)

FIELDS = ("error_type", "error_message", "stack_trace", "request_id")

_FUNCTION_ERRORS = [
    pytest.param(
        FunctionError("ValueError", "boom", ['  File "app.py", line 3, in handler\n'], "req-1"),
        ("ValueError", "boom", ['  File "app.py", line 3, in handler\n'], "req-1"),
        id="FunctionError",
    ),
    pytest.param(
        FunctionError("Runtime.MarshalError", "Unable to marshal response", [], None),
        ("Runtime.MarshalError", "Unable to marshal response", [], None),
        id="FunctionError-marshal",
    ),
    pytest.param(
        InvocationTimeout(0.5, "req-2"),
        ("Sandbox.Timedout", "Task timed out after 0.50 seconds", [], "req-2"),
        id="InvocationTimeout",
    ),
    pytest.param(
        MemoryLimitExceeded("Runtime exited with error: out of memory", "req-3"),
        ("Runtime.OutOfMemory", "Runtime exited with error: out of memory", [], "req-3"),
        id="MemoryLimitExceeded",
    ),
    pytest.param(
        InitError("ValueError: no config", ['  File "init.py", line 1\n'], "req-4"),
        ("Runtime.InitError", "ValueError: no config", ['  File "init.py", line 1\n'], "req-4"),
        id="InitError",
    ),
]


@pytest.mark.parametrize(("error", "expected"), _FUNCTION_ERRORS)
def test_function_errors_carry_their_fields(error: FunctionError, expected: tuple[object, ...]) -> None:
    assert tuple(getattr(error, field) for field in FIELDS) == expected
    assert isinstance(error, FunctionError)
    assert isinstance(error, LambdifyError)


@pytest.mark.parametrize(("error", "expected"), _FUNCTION_ERRORS)
def test_function_errors_survive_pickling(error: FunctionError, expected: tuple[object, ...]) -> None:
    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is type(error)
    assert tuple(getattr(restored, field) for field in FIELDS) == expected
    assert str(restored) == str(error)
    assert restored.to_payload() == error.to_payload()


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(LambdifyError("something"), id="LambdifyError"),
        pytest.param(TooManyRequests("Rate Exceeded"), id="TooManyRequests"),
    ],
)
def test_other_errors_survive_pickling(error: LambdifyError) -> None:
    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is type(error)
    assert restored.args == error.args
    assert str(restored) == str(error)


def test_pickling_keeps_the_protocol_independent_fields() -> None:
    error = FunctionError("KeyError", "'x'", ["frame\n"], "req-9")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert (restored.error_type, restored.error_message, restored.stack_trace, restored.request_id) == (
            "KeyError",
            "'x'",
            ["frame\n"],
            "req-9",
        )


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        pytest.param(0.5, "Task timed out after 0.50 seconds", id="half-second"),
        pytest.param(3, "Task timed out after 3.00 seconds", id="lambda-default"),
        pytest.param(900.0, "Task timed out after 900.00 seconds", id="maximum"),
    ],
)
def test_invocation_timeout(timeout: float, message: str) -> None:
    error = InvocationTimeout(timeout)

    assert isinstance(error, TimeoutError)
    assert isinstance(error, FunctionError)
    assert error.error_type == "Sandbox.Timedout"
    assert error.error_message == message
    with pytest.raises(TimeoutError):
        raise error


def test_invocation_timeout_is_caught_as_timeout_error_after_pickling() -> None:
    restored = pickle.loads(pickle.dumps(InvocationTimeout(0.5, "req")))

    assert isinstance(restored, TimeoutError)
    assert isinstance(restored, InvocationTimeout)
    assert restored.error_message == "Task timed out after 0.50 seconds"


@pytest.mark.parametrize(("error", "expected"), _FUNCTION_ERRORS)
def test_to_payload_is_lambdas_wire_format(error: FunctionError, expected: tuple[object, ...]) -> None:
    payload = error.to_payload()

    assert set(payload) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert payload["errorType"] == error.error_type
    assert payload["errorMessage"] == error.error_message
    assert payload["stackTrace"] == error.stack_trace
    assert isinstance(payload["stackTrace"], list)


def test_too_many_requests_is_not_a_function_error() -> None:
    error = TooManyRequests("Rate Exceeded")

    assert isinstance(error, LambdifyError)
    assert not isinstance(error, FunctionError)


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(FunctionError, id="FunctionError"),
        pytest.param(InvocationTimeout, id="InvocationTimeout"),
        pytest.param(MemoryLimitExceeded, id="MemoryLimitExceeded"),
        pytest.param(InitError, id="InitError"),
        pytest.param(TooManyRequests, id="TooManyRequests"),
    ],
)
def test_every_error_is_a_lambdify_error(cls: type[Exception]) -> None:
    assert issubclass(cls, LambdifyError)
    assert cls.__doc__


def test_user_frames_are_kept_in_a_folder_named_lambdify(tmp_path: Path) -> None:
    # A default `git clone` of this repository is a folder named `lambdify`: its tests and
    # examples are user code, whose frames belong in the stack trace.
    folder = tmp_path / "lambdify" / "examples"
    folder.mkdir(parents=True)
    (folder / "failing_handler.py").write_text(
        "from lambdify import handler\n\n@handler\ndef failing(event, context):\n    raise ValueError('boom')\n"
    )
    spec = importlib.util.spec_from_file_location("failing_handler", folder / "failing_handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(FunctionError) as raised:
        module.failing.invoke({})
    trace = "".join(raised.value.stack_trace)
    assert "failing_handler.py" in trace and "raise ValueError('boom')" in trace
    assert "lambdify/invocation.py" not in trace  # lambdify's own frames are still left out


def test_an_init_error_carries_the_request_id_of_the_invocation_that_triggered_it() -> None:
    def setup(ctx: Any) -> None:
        raise RuntimeError("no database")

    fn = handler(name="init-fails", init=setup)(lambda event, context: 1)
    with pytest.raises(InitError) as raised:
        fn.invoke({})
    request_id = raised.value.request_id
    assert request_id is not None and len(request_id) == 36
    assert raised.value.to_payload()["requestId"] == request_id
    assert pickle.loads(pickle.dumps(raised.value)).request_id == request_id
