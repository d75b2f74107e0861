"""`ecr-pullthrough remove-pull-secrets`: after a switch to pull-secret mode node-role, remove our pull Secrets.

The controller in node-role mode writes no Secret and has no right to delete one, so the Secrets of
secret mode stay until the operator removes them: pods rewritten earlier still name them (a missing pull
secret only makes the kubelet warn, and pull with the node's own credentials). This removes exactly this
installation's: named `--secret-name`, labelled `app.kubernetes.io/managed-by=ecr-pullthrough` and
`ecr-pullthrough/instance=<--instance>`. Each delete is conditional on the uid and resourceVersion it
listed, so a Secret replaced meanwhile stays. Without `--delete` it only lists them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook.controller.kube import REQUEST_TIMEOUT, api_client, body
from webhook.core import pullsecret
from webhook.settings import RemovePullSecretsSettings

PAGE = 500


@dataclass(frozen=True, slots=True)
class Found:
    namespace: str
    name: str
    uid: str
    resource_version: str


def ours(core: Any, secret_name: str, instance: str) -> list[Found]:
    """This installation's pull Secrets in every namespace (paged; no Secret data is kept)."""
    selector = f"{pullsecret.MANAGED_BY_LABEL}={pullsecret.MANAGED_BY},{pullsecret.INSTANCE_LABEL}={instance}"
    found: list[Found] = []
    token = ""
    while True:
        page = body(
            core.list_secret_for_all_namespaces(
                field_selector=f"metadata.name={secret_name}",
                label_selector=selector,
                limit=PAGE,
                _continue=token or None,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        for item in page.get("items") or []:
            metadata = item.get("metadata") or {}
            if item.get("type") == pullsecret.SECRET_TYPE:
                found.append(
                    Found(metadata["namespace"], metadata["name"], metadata["uid"], metadata["resourceVersion"])
                )
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return sorted(found, key=lambda f: f.namespace)


def remove(core: Any, secret: Found) -> str:
    """Delete one, only if it is still the one listed; the outcome in a word."""
    preconditions = {"uid": secret.uid, "resourceVersion": secret.resource_version}
    try:
        core.delete_namespaced_secret(
            secret.name, secret.namespace, body={"preconditions": preconditions}, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as error:
        if error.status == 404:
            return "gone"
        if error.status == 409:
            return "changed, kept"
        return f"failed: {error.status} {error.reason}"
    return "deleted"


def run(settings: RemovePullSecretsSettings) -> int:
    core: Any = client.CoreV1Api(api_client(settings.kubeconfig))
    found = ours(core, settings.secret_name, settings.instance)
    failed = False
    for secret in found:
        outcome = remove(core, secret) if settings.delete else "would delete"
        failed |= outcome.startswith("failed")
        print(f"{secret.namespace}/{secret.name}\t{outcome}")
    verb = "removed" if settings.delete else "found (run again with --delete to remove them)"
    print(
        f"{len(found)} pull Secret(s) {settings.secret_name} of {pullsecret.INSTANCE_LABEL}={settings.instance} {verb}",
        file=sys.stderr,
    )
    return 1 if failed else 0
