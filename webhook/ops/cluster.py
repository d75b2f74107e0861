"""Reading a cluster for `scan`: every workload kind with a pod template, pods, namespaces, and the
upstream status the controller published. Read-only, paginated; a kind we may not list is named."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.kube import REQUEST_TIMEOUT, body
from webhook.core.upstream_status import DOCUMENT_KEY, StatusDocument, Target, Verification, verification

PAGE = 500


def _lists(api: client.ApiClient) -> dict[str, tuple[str, Callable[..., Any]]]:
    """Kind -> (the RBAC rule it needs, its cluster-wide list call). Any: plain dicts, not the generated models."""
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    batch: Any = client.BatchV1Api(api)
    return {
        "Deployment": ("list deployments.apps", apps.list_deployment_for_all_namespaces),
        "StatefulSet": ("list statefulsets.apps", apps.list_stateful_set_for_all_namespaces),
        "DaemonSet": ("list daemonsets.apps", apps.list_daemon_set_for_all_namespaces),
        "ReplicaSet": ("list replicasets.apps", apps.list_replica_set_for_all_namespaces),
        "Job": ("list jobs.batch", batch.list_job_for_all_namespaces),
        "CronJob": ("list cronjobs.batch", batch.list_cron_job_for_all_namespaces),
        "Pod": ("list pods", core.list_pod_for_all_namespaces),
        "Namespace": ("list namespaces", core.list_namespace),
    }


def read(
    api: client.ApiClient, *, on_page: Callable[[str, int], None] = lambda kind, count: None
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], list[str]]:
    """(objects by kind, namespaces, problems): what could not be read is a problem, not a failure."""
    objects: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    for kind, (rule, list_fn) in _lists(api).items():
        try:
            objects[kind] = _all(list_fn, functools.partial(on_page, kind))
        except ApiException as error:
            if error.status == 403:
                problems.append(f"cannot {rule} (RBAC): {kind}s are not scanned; grant `{rule}` to see them")
            else:
                problems.append(f"listing {kind}s failed: {error.status} {error.reason}")
        except (HTTPError, OSError) as error:
            problems.append(f"listing {kind}s failed: {type(error).__name__}: {error}")
    namespaces = objects.pop("Namespace", [])
    return objects, namespaces, problems


def _all(list_fn: Callable[..., Any], on_page: Callable[[int], None]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        page = body(
            list_fn(limit=PAGE, _continue=token or None, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        )
        items.extend(page.get("items") or [])
        on_page(len(items))
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items


def published_verification(
    api: client.ApiClient, namespace: str, configmap: str, max_age: datetime.timedelta, target: Target
) -> tuple[Verification | None, str]:
    """The webhook's view of the upstreams from the controller's status ConfigMap, or None and why not.

    As the webhook does, it trusts an entry only when it was verified for `target` (registry, prefix, mode).
    """
    core: Any = client.CoreV1Api(api)
    try:
        found = body(
            core.read_namespaced_config_map(
                configmap, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
    except ApiException as error:
        return None, f"no upstream status ({namespace}/{configmap}: {error.status} {error.reason})"
    except (HTTPError, OSError) as error:
        return None, f"no upstream status ({type(error).__name__})"
    text = (found.get("data") or {}).get(DOCUMENT_KEY)
    try:
        document = StatusDocument.parse(text) if isinstance(text, str) else None
    except ValueError as error:
        return None, f"the upstream status is unreadable: {error}"
    if document is None:
        return None, f"{namespace}/{configmap} holds no {DOCUMENT_KEY}"
    return verification(document, datetime.datetime.now(datetime.UTC), max_age, target=target), ""
