"""An existing Flask app, wrapped: every request is an invocation on a warm execution context.

From the repository root:

gunicorn --bind 127.0.0.1:8000 --threads 4 examples.flask_wrap:app

then:

curl http://127.0.0.1:8000/          # visits counted in the context's own sqlite3 database
curl -i http://127.0.0.1:8000/slow   # 504 after 2 s: the request passed its deadline
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from flask import Flask, request

from lambdify import ExecutionContext, WSGIMiddleware, current_context


def setup(ctx: ExecutionContext) -> None:
    """INIT: runs once per execution context, on the context's own thread."""

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(ctx.tmp / "visits.db")
        conn.execute("create table if not exists visits (id integer primary key)")
        return conn

    # WSGIMiddleware runs one request per context at a time, always on the context's thread,
    # so even a thread-bound sqlite3 connection is safe here.
    ctx.resources.add("db", connect, check=lambda conn: conn.execute("select 1"))


app = Flask(__name__)
app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=2, init=setup)


@app.get("/")
def index() -> dict[str, Any]:
    context = request.environ["lambdify.context"]  # or current_context()
    db = context.resources["db"]
    with db:
        db.execute("insert into visits default values")
    (visits,) = db.execute("select count(*) from visits").fetchone()
    return {"request_id": context.aws_request_id, "cold_start": context.cold_start, "visits": visits}


@app.get("/slow")
def slow() -> str:
    time.sleep(current_context().get_remaining_time_in_millis() / 1000 + 1)  # past the deadline
    return "too late"
