"""The dedicated thread behind a thread-isolated execution context (`lambdify.isolation.thread`)."""

from __future__ import annotations

import gc
import os
import threading

import pytest
from helpers import eventually

from lambdify.isolation.thread import Worker


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_calls_from_many_threads_all_run_once_in_order_on_one_thread() -> None:
    worker = Worker("test")
    ran: list[tuple[int, int, int]] = []
    producers, per_producer = 8, 200

    def produce(producer: int) -> None:
        calls = [
            worker.submit(lambda i=i: ran.append((producer, i, threading.get_ident()))) for i in range(per_producer)
        ]
        for call in calls:
            assert call.done.acquire(timeout=10)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    worker.stop()

    assert len(ran) == producers * per_producer
    assert {ident for _, _, ident in ran} == {worker.ident}
    for producer in range(producers):
        assert [i for p, i, _ in ran if p == producer] == list(range(per_producer))


def test_extra_rings_with_nothing_queued_are_harmless() -> None:
    worker = Worker("test")
    for _ in range(3):
        worker._bell.ring()  # as a call that was queued and then taken before the thread waited
    assert worker.call(lambda: 42, timeout=5) == 42
    assert worker.call(lambda: 43, timeout=5) == 43
    worker.stop()


@pytest.mark.parametrize("doorbell", ["eventfd", "pipe"])
def test_a_stopped_worker_leaves_no_fd_open(doorbell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if doorbell == "pipe":
        monkeypatch.delattr(os, "eventfd")  # as on a system without eventfd
    elif not hasattr(os, "eventfd"):
        pytest.skip("this system has no eventfd")
    gc.collect()
    before = _open_fds()
    workers = [Worker(f"test-{i}") for i in range(10)]
    assert _open_fds() == before + 10 * (1 if doorbell == "eventfd" else 2)
    assert [w.call(lambda i=i: i, timeout=5) for i, w in enumerate(workers)] == list(range(10))
    for worker in workers:
        worker.stop()
    del workers, worker

    def all_closed() -> bool:  # a worker is garbage once its thread has ended
        gc.collect()
        return _open_fds() == before

    assert eventually(all_closed)


def test_a_doorbell_that_cannot_be_made_is_an_error_and_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_more_fds(*args: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_more_fds)
    gc.collect()
    before = _open_fds()
    with pytest.raises(OSError, match="Too many open files"):
        Worker("test")
    gc.collect()  # the half-made worker and its bell are garbage: nothing to close, nothing raised

    assert _open_fds() == before
