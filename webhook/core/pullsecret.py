"""The pull secret the controller keeps in every namespace: what it should be, and whether it is ours.

Ownership is two labels: `app.kubernetes.io/managed-by: ecr-pullthrough` (some
installation of ours) and `ecr-pullthrough/instance: <instance>` (which one: the
chart sets `<release namespace>.<release name>`). Two releases with the same
Secret name (one per region, say) would otherwise overwrite each other's Secret
at every refresh; now the first one's Secret is left to it, and the second one
says so. A Secret of 0.1.0 (managed-by only, no instance) holding a token for
our registry is adopted: it is the one our previous version wrote.
Pure: builds and compares dicts; the controller does the I/O.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.token import Token

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ecr-pullthrough"
INSTANCE_LABEL = "ecr-pullthrough/instance"
EXPIRES_ANNOTATION = "ecr-pullthrough/token-expires-at"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"
DATA_KEY = ".dockerconfigjson"
# ECR authorization tokens last 12 hours (GetAuthorizationToken); an adopted token's fetch time is estimated from it.
TOKEN_LIFETIME = datetime.timedelta(hours=12)


def desired(namespace: str, name: str, registry: str, token: Token, instance: str) -> dict[str, Any]:
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
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: instance},
            "annotations": {EXPIRES_ANNOTATION: token.expires_at.isoformat()},
        },
        "data": {DATA_KEY: encoded},
    }


Ownership = Literal["ours", "adoptable", "other-instance", "foreign"]


def ownership(secret: Mapping[str, Any], instance: str, registry: str) -> Ownership:
    """Whose `secret` is: ours, ours from before instances were labelled (0.1.0, same registry),
    another installation's, or not ecr-pullthrough's at all."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return "foreign"
    owner = labels.get(INSTANCE_LABEL)
    if owner == instance:
        return "ours"
    if owner is None and registries(secret) == {registry}:
        return "adoptable"
    return "other-instance"


def owner_of(secret: Mapping[str, Any]) -> str:
    """The installation a Secret of another instance names, in words."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    owner = labels.get(INSTANCE_LABEL)
    if owner is not None:
        return f"{INSTANCE_LABEL}={owner}"
    found = ", ".join(sorted(registries(secret))) or "no registry"
    return f"an ecr-pullthrough 0.1.0 installation (no {INSTANCE_LABEL} label) for {found}"


def registries(secret: Mapping[str, Any]) -> set[str]:
    """The registry hosts a docker config Secret holds credentials for (empty when unreadable).

    A slim copy (see `slim`) carries them precomputed, since it carries no data."""
    if "registries" in secret:
        return set(secret["registries"])
    try:
        config = json.loads(base64.b64decode((secret.get("data") or {})[DATA_KEY], validate=True))
        return {str(host) for host in config["auths"]}
    except (KeyError, TypeError, ValueError):
        return set()


def expires_at(secret: Mapping[str, Any]) -> datetime.datetime | None:
    value = ((secret.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION)
    try:
        return datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def data_hash(data: Mapping[str, Any] | None) -> str:
    """A digest of a Secret's data: what the controller's cache keeps instead of the token itself."""
    canonical = json.dumps(dict(data or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def slim(secret: Mapping[str, Any]) -> dict[str, Any]:
    """What reconcile needs of a Secret, a few hundred bytes instead of ~8 KB (token data, managedFields):
    identity and version, labels and annotations (ownership, expiry), type, a hash of the data, and
    the registries it holds credentials for."""
    metadata = secret.get("metadata") or {}
    return {
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations")
            if key in metadata
        },
        "type": secret.get("type"),
        "dataHash": secret["dataHash"] if "dataHash" in secret else data_hash(secret.get("data")),
        # Which registries it holds credentials for: how a 0.1.0 Secret (no instance label) is recognised.
        "registries": sorted(registries(secret)),
    }


def in_sync(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when `actual` (whole or slim) already holds everything `wanted` sets (others' labels may stay)."""
    actual_meta, wanted_meta = actual.get("metadata") or {}, wanted["metadata"]
    actual_hash = actual["dataHash"] if "dataHash" in actual else data_hash(actual.get("data"))
    return bool(
        actual.get("type") == wanted["type"]
        and actual_hash == data_hash(wanted["data"])
        and wanted_meta["labels"].items() <= (actual_meta.get("labels") or {}).items()
        and wanted_meta["annotations"].items() <= (actual_meta.get("annotations") or {}).items()
    )


def patch(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `actual` into `wanted`: our labels, annotation and data, nothing else.

    Others' labels, annotations, owner references and finalizers stay untouched, and the
    resourceVersion makes it a compare-and-swap (409 when the Secret changed meanwhile).
    """
    return {
        "metadata": {
            "resourceVersion": (actual.get("metadata") or {}).get("resourceVersion"),
            "labels": dict(wanted["metadata"]["labels"]),
            "annotations": dict(wanted["metadata"]["annotations"]),
        },
        "data": dict(wanted["data"]),
    }


Action = Literal["not-wanted", "in-sync", "foreign", "other-instance", "wrong-type", "newer-kept", "create", "update"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What reconcile should do for one namespace, and the Secret to write for create and update."""

    action: Action
    secret: dict[str, Any] | None = None


def plan(
    *,
    namespace: str,
    name: str,
    registry: str,
    instance: str,
    wanted: bool,
    token: Token | None,
    actual: Mapping[str, Any] | None,
) -> Plan:
    """The reconcile decision, given the token and the Secret that exists (None when there is none)."""
    if not wanted or token is None:
        return Plan("not-wanted")
    target = desired(namespace, name, registry, token, instance)
    owner = ownership(actual, instance, registry) if actual is not None else "ours"
    if owner in ("foreign", "other-instance"):
        return Plan(owner)  # never touch a Secret we do not own
    if actual is not None and in_sync(actual, target):
        return Plan("in-sync")
    if actual is not None and actual.get("type") != SECRET_TYPE:
        return Plan("wrong-type")  # a Secret's type cannot change: only deleting it helps
    newer = expires_at(actual) if actual is not None else None
    if newer is not None and newer > token.expires_at:
        return Plan("newer-kept")  # never overwrite a valid token with an older one
    if actual is None:
        return Plan("create", target)
    return Plan("update", patch(actual, target))


def token_from(secret: Mapping[str, Any] | None, registry: str, instance: str, now: datetime.datetime) -> Token | None:
    """The token a Secret of ours holds for `registry`, if it is still valid; None for anything else.

    Only for the Secret in the controller's own namespace: one in a tenant namespace could be
    planted by anyone who may write Secrets there, and would then be copied everywhere.
    """
    if secret is None or secret.get("type") != SECRET_TYPE:
        return None
    if ownership(secret, instance, registry) not in ("ours", "adoptable"):
        return None
    expiry = expires_at(secret)
    if expiry is None or expiry.tzinfo is None or now >= expiry:
        return None
    try:
        config = json.loads(base64.b64decode((secret.get("data") or {})[DATA_KEY], validate=True))
        entry = config["auths"][registry]
        username, password = entry["username"], entry["password"]
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(username, str) and isinstance(password, str) and password):
        return None
    return Token(
        username=username,
        password=password,
        expires_at=expiry,
        fetched_at=min(expiry - TOKEN_LIFETIME, now),
        endpoint=f"https://{registry}",
    )
