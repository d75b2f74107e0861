"""How `doctor` reads the cluster: plain dicts, 404 as None, 403 as the RBAC rule to grant.

Secrets are read as metadata only (PartialObjectMetadata), so no token ever reaches this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook.controller.kube import REQUEST_TIMEOUT, body
from webhook.core.upstream_status import DOCUMENT_KEY, StatusDocument

METADATA_ONLY = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
METADATA_LIST = {"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}


class Forbidden(Exception):
    """A read RBAC refused: `rule` is what to grant, `where` its scope."""

    def __init__(self, rule: str, where: str = "") -> None:
        super().__init__(rule)
        self.rule, self.where = rule, where


def call(rule: str, where: str, request: Callable[[], Any]) -> dict[str, Any] | None:
    """The JSON body of `request()`, None on 404; Forbidden on 403, naming `rule` (the RBAC rule to grant)."""
    try:
        return body(request())
    except ApiException as error:
        if error.status == 404:
            return None
        if error.status == 403:
            raise Forbidden(rule, where) from None
        raise


@dataclass(frozen=True, slots=True)
class Cluster:
    api: client.ApiClient
    namespace: str  # the release namespace

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    def status_document(self, configmap: str) -> tuple[StatusDocument | None, str]:
        found = call(
            "get configmaps",
            f"namespace {self.namespace}",
            lambda: self.core.read_namespaced_config_map(
                configmap, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if found is None:
            return None, f"no ConfigMap {self.namespace}/{configmap}"
        text = (found.get("data") or {}).get(DOCUMENT_KEY)
        if not isinstance(text, str):
            return None, f"{self.namespace}/{configmap} holds no {DOCUMENT_KEY}"
        try:
            return StatusDocument.parse(text), ""
        except ValueError as error:
            return None, f"{self.namespace}/{configmap} is unreadable: {error}"

    def secret_metadata(self, name: str, namespace: str) -> dict[str, Any] | None:
        return call(
            "get secrets",
            f"namespace {namespace}",
            lambda: self.core.read_namespaced_secret(
                name, namespace, _headers=METADATA_ONLY, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
