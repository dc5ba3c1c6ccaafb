"""The master's SQLite connection reached from two threads at once (a dashboard read on the
database thread while the service or a test closes it): the close waits for the statement, instead
of freeing the connection under it (a segfault seen in CI, 2026-12-05)."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.master.db_sqlite import open_sqlite


def test_close_during_a_read_on_another_thread_waits_for_the_read(tmp_path: Path) -> None:
    sql = open_sqlite(tmp_path / "m.sqlite")
    in_query, closing = threading.Event(), threading.Event()
    steps: list[int] = []

    def step(i: int) -> int:  # called by SQLite for each row, while the statement runs
        in_query.set()
        if i == 1:
            closing.wait(timeout=10)  # the main thread has called close() (or 10 s passed)
        steps.append(i)
        return i

    sql._conn.create_function("step", 1, step)  # a test hook into the running statement
    result: list[object] = []

    def read() -> None:
        rows, _ = sql.run("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 2000) SELECT SUM(step(i)) FROM n")
        result.append(rows[0][0])

    reader = threading.Thread(target=read)
    reader.start()
    assert in_query.wait(timeout=10)
    closer = threading.Thread(target=sql.close)
    closer.start()
    closing.set()
    reader.join(timeout=30)
    closer.join(timeout=30)
    assert not reader.is_alive() and not closer.is_alive()
    assert result == [2000 * 2001 // 2]  # the read ran to its end on the open connection
    assert len(steps) == 2000
