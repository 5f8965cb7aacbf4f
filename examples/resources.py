"""A warm sqlite3 connection, created once per execution context and checked before reuse.

Run it through the CLI (one invocation: 1), or as a program (three invocations on one warm
context: 1, 2, 3):

lambdify invoke examples/resources.py --event -  <<< '{}'
python examples/resources.py
"""

from __future__ import annotations

import sqlite3
from typing import Any

from lambdify import ExecutionContext, LambdaContext, handler


def setup(ctx: ExecutionContext) -> None:
    """INIT: runs once per execution context, before its first invocation."""
    path = ctx.tmp / "visits.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.execute("create table if not exists visits (id integer primary key)")
        return conn

    # Created on first use; `check` runs before a reuse, and a failing check means "reconnect".
    ctx.resources.add("db", connect, check=lambda conn: conn.execute("select 1"))


@handler(init=setup)
def visits(event: dict[str, Any], context: LambdaContext) -> int:
    db = context.resources["db"]
    with db:
        db.execute("insert into visits default values")
    (count,) = db.execute("select count(*) from visits").fetchone()
    return int(count)


if __name__ == "__main__":
    # Sequential invocations share one warm context, so its database keeps counting: 1, 2, 3.
    for _ in range(3):
        print(visits.invoke({}))
    visits.shutdown()
