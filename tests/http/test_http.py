"""Functions served over HTTP (DESIGN.md §5), each test against its own real uvicorn process.

`fn.asgi` and `FunctionApp` are driven by real clients: httpx for HTTP events and responses,
boto3 for the Lambda Invoke API. Apps are small modules written into `tmp_path`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import sqlite3
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import boto3_lambda, serve

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
JSON_BODY = '{"k": [1, 2], "s": "é"}'.encode()
MULTI_HEADERS = [("x-multi", "one"), ("x-multi", "two"), ("cookie", "c1=v1; c2=v2")]
QUERY = "a=1&a=2&b=x%20y"


def _write(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


@contextlib.contextmanager
def _lambda_client(url: str) -> Iterator[Any]:
    client = boto3_lambda(url)
    try:
        yield client
    finally:
        client.close()


def _invoke(client: Any, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    response = client.invoke(**kwargs)
    payload = response.pop("Payload")
    try:
        return response, payload.read()
    finally:
        payload.close()


def _request_id(response: httpx.Response) -> str:
    value = response.headers.get("x-amzn-requestid", "")
    assert len(value) == 36 and value.count("-") == 4, (response.status_code, dict(response.headers))
    return value


# --- requests → events ---------------------------------------------------------------------------

ECHO = """
import json
from lambdify import FunctionApp, handler

@handler
def echo(event, context):
    return event                      # v2: a result without statusCode becomes 200 JSON

def _json(event):
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}

@handler(name="v1", event_format="v1")
def echo_v1(event, context):
    return _json(event)

@handler(name="alb", event_format="alb")
def echo_alb(event, context):
    return _json(event)

app = FunctionApp([echo, echo_v1, echo_alb])
"""


def _three_requests(client: httpx.Client, base: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The same three requests through any echo function: (GET with query/headers/cookies, JSON POST, PNG POST)."""
    responses = [
        client.get(f"{base}/p%20q/x?{QUERY}", headers=MULTI_HEADERS),
        client.post(f"{base}/json", content=JSON_BODY, headers={"content-type": "application/json"}),
        client.post(f"{base}/png", content=PNG, headers={"content-type": "image/png"}),
    ]
    events = []
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        _request_id(response)
        events.append(response.json())
    return events[0], events[1], events[2]


def test_fn_asgi_builds_v2_events(tmp_path: Path) -> None:
    _write(tmp_path, "echo_app", ECHO)
    with serve("echo_app:echo.asgi", cwd=tmp_path) as server, httpx.Client() as client:
        get, post_json, post_png = _three_requests(client, server.url)
        response = client.get(f"{server.url}/p%20q/x?{QUERY}", headers=MULTI_HEADERS)
    assert response.json()["requestContext"]["requestId"] == _request_id(response)

    assert get["version"] == "2.0" and get["routeKey"] == "$default"
    assert get["rawPath"] == "/p%20q/x"  # raw, as received
    assert get["rawQueryString"] == QUERY
    assert get["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert get["headers"]["x-multi"] == "one,two"
    assert get["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in get["headers"]
    assert get["isBase64Encoded"] is False and "body" not in get
    http = get["requestContext"]["http"]
    assert http == {**http, "method": "GET", "path": "/p q/x", "sourceIp": "127.0.0.1", "protocol": "HTTP/1.1"}
    assert get["requestContext"]["domainName"] == "127.0.0.1"

    assert post_json["requestContext"]["http"]["method"] == "POST"
    assert post_json["body"] == JSON_BODY.decode() and post_json["isBase64Encoded"] is False

    assert post_png["isBase64Encoded"] is True
    assert base64.b64decode(post_png["body"]) == PNG


def test_function_app_events_v1_alb_and_prefix(tmp_path: Path) -> None:
    _write(tmp_path, "echo_app", ECHO)
    with serve("echo_app:app", cwd=tmp_path) as server, httpx.Client() as client:
        v2 = client.get(f"{server.url}/echo/a/b").json()
        v2_root = client.get(f"{server.url}/echo").json()
        v1_get, v1_json, v1_png = _three_requests(client, f"{server.url}/v1")
        alb_get, alb_json, alb_png = _three_requests(client, f"{server.url}/alb")
        missing = client.get(f"{server.url}/nobody/a")

    # The function sees the path below its prefix, as API Gateway strips a base path mapping.
    assert v2["rawPath"] == "/a/b" and v2["requestContext"]["http"]["path"] == "/a/b"
    assert v2_root["rawPath"] == "/"
    assert missing.status_code == 404

    # v1 (REST proxy): last value in the single-value maps, all of them in the multi-value maps.
    assert v1_get["httpMethod"] == "GET" and v1_get["path"] == "/p q/x"
    assert v1_get["headers"]["x-multi"] == "two"
    assert v1_get["multiValueHeaders"]["x-multi"] == ["one", "two"]
    assert v1_get["queryStringParameters"] == {"a": "2", "b": "x y"}
    assert v1_get["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y"]}
    assert v1_get["headers"]["cookie"] == "c1=v1; c2=v2"
    assert v1_get["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert v1_get["body"] is None and v1_get["isBase64Encoded"] is False
    assert v1_json["httpMethod"] == "POST" and v1_json["body"] == JSON_BODY.decode()
    assert v1_png["isBase64Encoded"] is True and base64.b64decode(v1_png["body"]) == PNG

    # ALB, multi-value mode off: last values, nothing decoded, no multi-value fields at all.
    assert alb_get["httpMethod"] == "GET" and alb_get["path"] == "/p%20q/x"
    assert alb_get["headers"]["x-multi"] == "two"
    assert alb_get["queryStringParameters"] == {"a": "2", "b": "x%20y"}
    assert "multiValueHeaders" not in alb_get and "multiValueQueryStringParameters" not in alb_get
    assert alb_get["requestContext"]["elb"]["targetGroupArn"].startswith("arn:aws:elasticloadbalancing:")
    assert alb_json["body"] == JSON_BODY.decode() and alb_json["isBase64Encoded"] is False
    assert alb_png["isBase64Encoded"] is True and base64.b64decode(alb_png["body"]) == PNG


# --- results → responses -------------------------------------------------------------------------

RESPONSES = f"""
import base64, time
from lambdify import FunctionApp, handler

PNG = {PNG!r}

@handler
def structured(event, context):
    return {{
        "statusCode": 201,
        "headers": {{"x-single": "s", "content-type": "text/plain"}},
        "multiValueHeaders": {{"x-single": ["ignored on v2"]}},
        "cookies": ["a=1; Path=/", "b=2; HttpOnly", "c=3"],
        "body": "made",
    }}

@handler(name="multi", event_format="v1")
def multi(event, context):
    return {{
        "statusCode": 202,
        "headers": {{"x-both": "single", "x-only": "s"}},
        "multiValueHeaders": {{"x-both": ["m1", "m2"], "set-cookie": ["a=1", "b=2"]}},
        "body": "ok",
    }}

@handler
def png(event, context):
    body = base64.b64encode(PNG).decode()
    return {{"statusCode": 200, "headers": {{"content-type": "image/png"}}, "body": body, "isBase64Encoded": True}}

@handler
def plain(event, context):
    return {{"answer": 42, "list": [1, "two"]}}

@handler
def text(event, context):
    return "hello, world"

@handler
def boom(event, context):
    raise ValueError("secret detail")

@handler(timeout=0.5)
def slow(event, context):
    time.sleep(3)
    return "too late"

app = FunctionApp([structured, multi, png, plain, text, boom, slow])
"""


def test_results_map_to_responses(tmp_path: Path) -> None:
    _write(tmp_path, "responses_app", RESPONSES)
    with serve("responses_app:app", cwd=tmp_path) as server, httpx.Client(base_url=server.url) as client:
        structured = client.get("/structured/")
        head = client.head("/structured/")
        multi = client.get("/multi/")
        png = client.get("/png/")
        plain = client.get("/plain/")
        text = client.get("/text/")
        boom = client.post("/boom/", json={})
        started = time.monotonic()
        slow = client.get("/slow/")
        slow_elapsed = time.monotonic() - started
        too_large = client.post("/plain/", content=b"x" * (6 * 1024 * 1024 + 1))
        after = client.get("/plain/")

    assert structured.status_code == 201 and structured.text == "made"
    assert structured.headers["x-single"] == "s"  # v2 has no multiValueHeaders
    assert structured.headers["content-type"] == "text/plain"
    assert structured.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly", "c=3"]

    assert head.status_code == 201 and head.content == b""
    assert head.headers["content-length"] == "4"
    assert head.headers.get_list("set-cookie") == structured.headers.get_list("set-cookie")

    # REST: multiValueHeaders wins for a name in both; one set-cookie line per value.
    assert multi.status_code == 202 and multi.text == "ok"
    assert multi.headers.get_list("x-both") == ["m1", "m2"]
    assert multi.headers["x-only"] == "s"
    assert multi.headers.get_list("set-cookie") == ["a=1", "b=2"]

    assert png.status_code == 200 and png.content == PNG
    assert png.headers["content-type"] == "image/png"

    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    assert plain.json() == {"answer": 42, "list": [1, "two"]}
    assert text.status_code == 200 and text.headers["content-type"] == "application/json"
    assert text.text == "hello, world"

    assert boom.status_code == 502 and set(boom.json()) == {"message"}
    assert "secret detail" not in boom.text
    assert slow.status_code == 504 and set(slow.json()) == {"message"}
    assert slow_elapsed < 2.0, f"the 504 came {slow_elapsed:.2f}s after the request, not at the 0.5s deadline"
    assert too_large.status_code == 413 and set(too_large.json()) == {"message"}
    assert after.status_code == 200

    responses = [structured, head, multi, png, plain, text, boom, slow, too_large, after]
    request_ids = [_request_id(response) for response in responses]
    assert len(set(request_ids)) == len(request_ids)


THROTTLED = """
import time
from lambdify import FunctionApp, handler

@handler(max_contexts=1, queue_timeout=0.3)
def slow(event, context):
    time.sleep(1.5)
    return "done"

app = FunctionApp([slow])
"""


def test_throttled_request_gets_429(tmp_path: Path) -> None:
    _write(tmp_path, "throttled_app", THROTTLED)
    barrier = threading.Barrier(2)

    def get(url: str) -> httpx.Response:
        with httpx.Client(timeout=10) as client:
            barrier.wait(5)
            return client.get(url)

    with serve("throttled_app:app", cwd=tmp_path) as server, ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(get, [f"{server.url}/slow/"] * 2))
    by_status = sorted(responses, key=lambda response: response.status_code)
    assert [response.status_code for response in by_status] == [200, 429]
    assert by_status[0].text == "done"
    assert set(by_status[1].json()) == {"message"}
    _request_id(by_status[1])


# --- the Invoke API, through boto3 ---------------------------------------------------------------

INVOKE = """
import logging, time
from lambdify import FunctionApp, handler

@handler
def hello(event, context):
    return {"hello": event.get("name"), "request_id": context.aws_request_id}

@handler
def boom(event, context):
    raise ValueError(f"broken {event.get('n')}")

@handler
def tail(event, context):
    print("printed", event["marker"])
    logging.getLogger(__name__).warning("logged %s", event["marker"])
    time.sleep(0.2)  # keep all ten in flight together
    return event["marker"]

app = FunctionApp([hello, boom, tail])
"""


def test_invoke_api_with_boto3(tmp_path: Path) -> None:
    _write(tmp_path, "invoke_app", INVOKE)
    with serve("invoke_app:app", cwd=tmp_path) as server, _lambda_client(server.url) as client:
        ok, ok_payload = _invoke(client, FunctionName="hello", Payload=json.dumps({"name": "Ada"}))
        event, event_payload = _invoke(client, FunctionName="hello", InvocationType="Event", Payload=b"{}")
        dry, dry_payload = _invoke(client, FunctionName="hello", InvocationType="DryRun", Payload=b"{}")
        no_body, no_body_payload = _invoke(client, FunctionName="hello")
        failed, failed_payload = _invoke(client, FunctionName="boom", Payload=json.dumps({"n": 7}))
        arn = "arn:aws:lambda:us-east-1:000000000000:function:hello"
        by_arn, by_arn_payload = _invoke(client, FunctionName=arn, Payload=b'{"name": "arn"}')
        partial, partial_payload = _invoke(
            client, FunctionName="000000000000:function:hello", Qualifier="$LATEST", Payload=b'{"name": "partial"}'
        )
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="nobody", Payload=b"{}")
        with pytest.raises(client.exceptions.InvalidRequestContentException):
            client.invoke(FunctionName="hello", Payload=b"{not json")
        with pytest.raises(client.exceptions.RequestTooLargeException):
            client.invoke(FunctionName="hello", Payload=b'"' + b"x" * 7_000_000 + b'"')
        with pytest.raises(client.exceptions.RequestTooLargeException):  # 1 MB for Event
            client.invoke(FunctionName="hello", InvocationType="Event", Payload=b'"' + b"x" * 1_100_000 + b'"')
        after, after_payload = _invoke(client, FunctionName="hello", Payload=b'{"name": "after"}')

    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert ok["ExecutedVersion"] == "$LATEST"
    result = json.loads(ok_payload)
    assert result["hello"] == "Ada"
    assert result["request_id"] == ok["ResponseMetadata"]["RequestId"]
    assert event["StatusCode"] == 202 and event_payload == b""
    assert dry["StatusCode"] == 204 and dry_payload == b""
    assert no_body["StatusCode"] == 200 and json.loads(no_body_payload)["hello"] is None

    assert failed["StatusCode"] == 200 and failed["FunctionError"] == "Unhandled"
    error = json.loads(failed_payload)
    assert error["errorMessage"] == "broken 7" and error["errorType"] == "ValueError"
    assert isinstance(error["stackTrace"], list) and error["stackTrace"]

    assert json.loads(by_arn_payload)["hello"] == "arn" and by_arn["StatusCode"] == 200
    assert json.loads(partial_payload)["hello"] == "partial" and partial["StatusCode"] == 200
    assert json.loads(after_payload)["hello"] == "after" and after["StatusCode"] == 200


def test_tail_logs_are_per_invocation_under_concurrency(tmp_path: Path) -> None:
    _write(tmp_path, "invoke_app", INVOKE)
    markers = [f"marker-{i:02d}-{'x' * 4}" for i in range(10)]
    barrier = threading.Barrier(len(markers))

    with serve("invoke_app:app", cwd=tmp_path) as server:
        # boto3's default session is not thread-safe to build clients from; build them here.
        clients = [boto3_lambda(server.url) for _ in markers]
        try:

            def call(index: int) -> tuple[dict[str, Any], bytes]:
                barrier.wait(10)
                payload = json.dumps({"marker": markers[index]})
                return _invoke(clients[index], FunctionName="tail", LogType="Tail", Payload=payload)

            with ThreadPoolExecutor(len(markers)) as pool:
                outcomes = list(pool.map(call, range(len(markers))))
        finally:
            for client in clients:
                client.close()

    request_ids = set()
    for marker, (response, payload) in zip(markers, outcomes, strict=True):
        assert response["StatusCode"] == 200 and json.loads(payload) == marker
        request_id = response["ResponseMetadata"]["RequestId"]
        request_ids.add(request_id)
        log = base64.b64decode(response["LogResult"]).decode()
        assert log.count("START RequestId:") == 1, log
        assert f"START RequestId: {request_id} Version: $LATEST" in log
        assert f"END RequestId: {request_id}" in log
        assert f"REPORT RequestId: {request_id}\tDuration: " in log
        assert f"printed {marker}" in log
        assert f"logged {marker}" in log
        others = [other for other in markers if other != marker and other in log]
        assert not others, f"{marker}'s log holds other invocations' output: {others}\n{log}"
        assert log.index("START") < log.index(f"printed {marker}") < log.index("END") < log.index("REPORT")
    assert len(request_ids) == len(markers)


SQLITE_EVENTS = """
import contextlib, sqlite3, time
from lambdify import FunctionApp, handler

@handler(timeout=60)
def insert(event, context):
    time.sleep(0.1)  # slow enough that most are still queued when SIGTERM comes
    with contextlib.closing(sqlite3.connect(event["db"], timeout=60)) as connection:
        connection.execute("PRAGMA busy_timeout = 60000")
        with connection:
            connection.execute("INSERT INTO rows (n) VALUES (?)", (event["n"],))

app = FunctionApp([insert])
"""


def test_event_invocations_are_finished_after_sigterm(tmp_path: Path) -> None:
    _write(tmp_path, "events_app", SQLITE_EVENTS)
    db = tmp_path / "rows.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE rows (n INTEGER NOT NULL)")
        connection.commit()
    total, senders = 200, 4

    with serve("events_app:app", cwd=tmp_path) as server:
        clients = [boto3_lambda(server.url) for _ in range(senders)]
        try:

            def send(first: int) -> list[int]:
                statuses = []
                for n in range(first, total, senders):
                    payload = json.dumps({"db": str(db), "n": n})
                    response, _ = _invoke(
                        clients[first], FunctionName="insert", InvocationType="Event", Payload=payload
                    )
                    statuses.append(response["StatusCode"])
                return statuses

            with ThreadPoolExecutor(senders) as pool:
                statuses = [status for batch in pool.map(send, range(senders)) for status in batch]
        finally:
            for client in clients:
                client.close()
        returncode = server.stop(timeout=60)  # SIGTERM right after the last 202
        assert statuses == [202] * total

    assert returncode in (0, -signal.SIGTERM), server.stderr  # uvicorn re-raises the signal it caught
    assert "Traceback" not in server.stderr, server.stderr
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = sorted(n for (n,) in connection.execute("SELECT n FROM rows"))
    assert rows == list(range(total)), f"{total - len(rows)} accepted Event invocations were lost\n{server.stderr}"


# --- mounted in a parent app ---------------------------------------------------------------------

MOUNTED_FUNCTIONS = """
from lambdify import FunctionApp, handler

@handler(provisioned=1)
def hello(event, context):
    return {"rawPath": event.get("rawPath"), "name": event.get("name"), "cold_start": context.cold_start}

functions = FunctionApp([hello])
"""

PARENT_APPS = {
    "starlette": """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

async def own(request):
    return PlainTextResponse("own route")

app = Starlette(routes=[Route("/own", own), Mount("/lambda", functions)], lifespan=functions.lifespan)
""",
    "fastapi": """
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI(lifespan=functions.lifespan)

@app.get("/own", response_class=PlainTextResponse)
async def own():
    return "own route"

app.mount("/lambda", functions)
""",
}


@pytest.mark.parametrize("framework", list(PARENT_APPS))
def test_mounted_function_app(tmp_path: Path, framework: str) -> None:
    _write(tmp_path, "parent_app", MOUNTED_FUNCTIONS + PARENT_APPS[framework])
    with serve("parent_app:app", cwd=tmp_path) as server, httpx.Client(base_url=server.url) as client:
        own = client.get("/own")
        first = client.get("/lambda/hello/a/b?x=1")
        with _lambda_client(server.url + "/lambda") as lambda_client:
            invoked, payload = _invoke(lambda_client, FunctionName="hello", Payload=b'{"name": "mounted"}')
            with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
                lambda_client.invoke(FunctionName="nobody", Payload=b"{}")

    assert own.status_code == 200 and own.text == "own route"
    assert first.status_code == 200, first.text
    assert first.json()["rawPath"] == "/a/b"
    assert first.json()["cold_start"] is False, "lifespan=functions.lifespan did not initialise the provisioned context"
    _request_id(first)
    assert invoked["StatusCode"] == 200 and json.loads(payload)["name"] == "mounted"
    assert "Traceback" not in server.stderr, server.stderr


# --- real peers: AWS Lambda Powertools and Mangum inside a handler --------------------------------

POWERTOOLS = """
import json
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.shared.cookies import Cookie
from lambdify import FunctionApp, handler

resolver = APIGatewayHttpResolver()

@resolver.get("/users/<user_id>")
def get_user(user_id):
    event = resolver.current_event
    body = {"user_id": user_id, "q": event.get_query_string_value("q"), "cookies": event.cookies}
    cookies = [Cookie(name="seen", value=user_id, secure=False), Cookie(name="second", value="2", secure=False)]
    return Response(status_code=200, content_type="application/json", body=json.dumps(body), cookies=cookies)

@resolver.post("/users")
def create_user():
    return {"created": resolver.current_event.json_body["name"]}, 201

@handler
def api(event, context):
    return resolver.resolve(event, context)

app = FunctionApp([api])
"""


def test_powertools_resolver_as_handler(tmp_path: Path) -> None:
    _write(tmp_path, "powertools_app", POWERTOOLS)
    env = {"POWERTOOLS_SERVICE_NAME": "lambdify-test", "POWERTOOLS_METRICS_NAMESPACE": "lambdify-test"}
    with serve("powertools_app:app", cwd=tmp_path, env=env) as server, httpx.Client(base_url=server.url) as client:
        user = client.get("/api/users/42?q=hello%20world", headers={"cookie": "c1=v1; c2=v2"})
        created = client.post("/api/users", json={"name": "Ada"})
        missing = client.get("/api/nowhere")

    assert user.status_code == 200, user.text
    assert user.json() == {"user_id": "42", "q": "hello world", "cookies": ["c1=v1", "c2=v2"]}
    set_cookies = user.headers.get_list("set-cookie")
    assert [cookie.split(";")[0] for cookie in set_cookies] == ["seen=42", "second=2"]
    assert created.status_code == 201 and created.json() == {"created": "Ada"}
    assert missing.status_code == 404


MANGUM = """
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from lambdify import FunctionApp, handler

async def item(request):
    body = {
        "id": request.path_params["id"],
        "q": request.query_params.getlist("q"),
        "cookies": dict(request.cookies),
        "body": (await request.body()).decode(),
    }
    response = JSONResponse(body, status_code=201, headers={"x-inner": "yes"})
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response

adapter = Mangum(Starlette(routes=[Route("/items/{id}", item, methods=["POST"])]), lifespan="off")

@handler
def web(event, context):
    return adapter(event, context)

app = FunctionApp([web])
"""


def test_mangum_app_inside_a_handler(tmp_path: Path) -> None:
    _write(tmp_path, "mangum_app", MANGUM)
    with serve("mangum_app:app", cwd=tmp_path) as server, httpx.Client(base_url=server.url) as client:
        response = client.post("/web/items/7?q=a&q=b", content=b"payload", headers={"cookie": "c1=v1; c2=v2"})
        again = client.post("/web/items/8", content=b"")

    assert response.status_code == 201, (response.text, server.stderr)
    assert response.headers["x-inner"] == "yes"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"id": "7", "q": ["a", "b"], "cookies": {"c1": "v1", "c2": "v2"}, "body": "payload"}
    assert [cookie.split(";")[0] for cookie in response.headers.get_list("set-cookie")] == ["first=1", "second=2"]
    assert again.status_code == 201 and again.json()["id"] == "8"
    _request_id(response)
