import threading

from webhook.controller.workqueue import NORMAL, URGENT, WorkQueue


def drain(queue: WorkQueue) -> list[str]:
    names = []
    while (name := queue.get(timeout=0)) is not None:
        names.append(name)
        queue.done(name)
    return names


def test_a_name_is_queued_once() -> None:
    queue = WorkQueue()
    for _ in range(3):
        queue.add("a")
    assert len(queue) == 1
    assert drain(queue) == ["a"]


def test_urgent_work_goes_first() -> None:
    queue = WorkQueue()
    for name in ("r1", "r2", "r3"):
        queue.add(name, NORMAL)
    queue.add("new", URGENT)
    queue.add("r3", URGENT)
    assert drain(queue) == ["new", "r3", "r1", "r2"]


def test_delayed_work_waits() -> None:
    queue = WorkQueue()
    queue.add("later", delay=60)
    queue.add("now")
    assert drain(queue) == ["now"]
    assert len(queue) == 1
    queue.add("later")  # due now: sooner wins
    assert drain(queue) == ["later"]


def test_a_name_added_while_processing_is_processed_again_after_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    assert queue.get(timeout=0) is None, "never twice at once"
    queue.done("a")
    assert queue.get(timeout=0) == "a"


def test_get_wakes_up_for_new_work_and_close() -> None:
    queue = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=30)))
    worker.start()
    queue.add("x")
    worker.join(timeout=10)
    assert got == ["x"]
    closing = threading.Thread(target=lambda: got.append(queue.get(timeout=30)))
    closing.start()
    queue.close()
    closing.join(timeout=10)
    assert got == ["x", None]
