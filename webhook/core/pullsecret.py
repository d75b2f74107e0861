"""The pull secret the controller keeps in every namespace: what it should be, and whether it is ours.

Pure: builds and compares dicts; the controller does the I/O.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from typing import Any

from webhook.core.token import Token

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ecr-pullthrough"
EXPIRES_ANNOTATION = "ecr-pullthrough/token-expires-at"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"
DATA_KEY = ".dockerconfigjson"


def desired(namespace: str, name: str, registry: str, token: Token) -> dict[str, Any]:
    """The Secret that should exist in `namespace`."""
    auth = base64.b64encode(f"{token.username}:{token.password}".encode()).decode()
    config = {"auths": {registry: {"username": token.username, "password": token.password, "auth": auth}}}
    encoded = base64.b64encode(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {EXPIRES_ANNOTATION: token.expires_at.isoformat()},
        },
        "data": {DATA_KEY: encoded},
    }


def is_ours(secret: Mapping[str, Any]) -> bool:
    return ((secret.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def expires_at(secret: Mapping[str, Any]) -> datetime.datetime | None:
    value = ((secret.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION)
    try:
        return datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def in_sync(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when `actual` already holds everything `wanted` sets (other labels and annotations may stay)."""
    actual_meta, wanted_meta = actual.get("metadata") or {}, wanted["metadata"]
    return bool(
        actual.get("type") == wanted["type"]
        and (actual.get("data") or {}) == wanted["data"]
        and wanted_meta["labels"].items() <= (actual_meta.get("labels") or {}).items()
        and wanted_meta["annotations"].items() <= (actual_meta.get("annotations") or {}).items()
    )


def updated(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """`actual` with `wanted` applied, keeping others' labels and annotations and the resourceVersion."""
    actual_meta = actual.get("metadata") or {}
    metadata = {
        **actual_meta,
        "labels": {**(actual_meta.get("labels") or {}), **wanted["metadata"]["labels"]},
        "annotations": {**(actual_meta.get("annotations") or {}), **wanted["metadata"]["annotations"]},
    }
    return {
        **actual,
        "apiVersion": "v1",
        "kind": "Secret",
        "type": wanted["type"],
        "data": wanted["data"],
        "metadata": metadata,
    }
