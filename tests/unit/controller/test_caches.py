"""The controller's caches (caches.py), fed by watch events and lists, without an API server."""

from typing import Any

from kubernetes import client

from webhook.controller.ecr import TokenSource
from webhook.controller.metrics import ControllerMetrics
from webhook.controller.secrets import Controller, SecretTarget


def controller() -> Controller:
    target = SecretTarget(
        name="ecr-pullthrough", registry="r", excluded_names=frozenset(), excluded_by_labels=lambda labels: False
    )
    return Controller(
        client.ApiClient(), TokenSource(None), target, metrics=ControllerMetrics(), is_leader=lambda: True
    )


def secret(namespace: str, version: int) -> dict[str, Any]:
    return {"metadata": {"name": "ecr-pullthrough", "namespace": namespace, "resourceVersion": str(version)}}


def drain(queue: Any) -> set[str]:
    seen = set()
    while (item := queue.get(timeout=0)) is not None:
        seen.add(item)
        queue.done(item)
    return seen


def test_a_write_answer_never_overwrites_a_newer_delete() -> None:
    c = controller()
    c.caches._secrets_listed([secret("a", 5)])
    c.caches._secret_event("DELETED", secret("a", 9))
    c.caches.remember_secret("a", secret("a", 8))  # the answer to a write that raced the delete
    assert "a" not in c.caches._secrets
    c.caches.remember_secret("a", secret("a", 10))  # a newer write: kept
    assert c.caches._secrets["a"]["metadata"]["resourceVersion"] == "10"


def test_a_relist_queues_what_vanished_during_the_watch_gap() -> None:
    c = controller()
    c.caches._secrets_listed([secret("a", 1), secret("b", 2)])
    drain(c.queue)
    c.caches._secrets_listed([secret("b", 3)])  # "a" was deleted while the watch was down
    assert drain(c.queue) == {"a", "b"}
    namespace = {"metadata": {"name": "x"}}
    c.caches._namespaces_listed([namespace])
    drain(c.queue)
    c.caches._namespaces_listed([])
    assert drain(c.queue) == {"x"}


def test_workers_wait_until_both_caches_are_listed() -> None:
    c = controller()
    assert not c.caches_synced.is_set()
    c.caches._namespaces_listed([])
    assert not c.caches_synced.is_set()
    c.caches._secrets_listed([])
    assert c.caches_synced.is_set()
