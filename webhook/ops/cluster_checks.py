"""`doctor`'s cluster checks: the pull Secret in every namespace that should have it (present, ours,
unexpired), the webhook configuration (its caBundle signs the serving certificate of the TLS Secret),
and the upstream status (published, fresh enough for the webhook to trust)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes import client

from webhook.controller.kube import REQUEST_TIMEOUT
from webhook.controller.webhookcerts import RENEW_FRACTION
from webhook.core.pullsecret import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from webhook.core.selectors import Selector
from webhook.core.upstream_status import StatusDocument
from webhook.ops.checklist import Result, failed, forbidden, passed, warned
from webhook.ops.controller_view import CONTROLLER_LOGS, expiry
from webhook.ops.kubeapi import METADATA_LIST, Cluster, Forbidden, call

SHOWN = 5  # namespaces named per problem; the rest are counted


def pull_secrets(
    cluster: Cluster,
    secret_name: str,
    instance: str,
    excluded_names: frozenset[str],
    excluded_by_labels: Selector,
    now: datetime.datetime,
) -> Result:
    """Every namespace the controller serves holds our Secret, unexpired: counts, and the first few that do not."""
    name = f"pull Secret {secret_name}"
    try:
        namespaces = call(
            "list namespaces",
            "",
            lambda: cluster.core.list_namespace(
                _headers=METADATA_LIST, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        secrets = call(
            "list secrets",
            "all namespaces",
            lambda: cluster.core.list_secret_for_all_namespaces(
                field_selector=f"metadata.name={secret_name}",
                _headers=METADATA_LIST,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
    except Forbidden as error:
        return forbidden("pull-secrets", name, error.rule, error.where)
    held = {(s.get("metadata") or {}).get("namespace"): s for s in (secrets or {}).get("items") or []}
    wanted = []
    for namespace in (namespaces or {}).get("items") or []:
        metadata = namespace.get("metadata") or {}
        ns, labels = metadata.get("name", ""), metadata.get("labels") or {}
        if ns and not metadata.get("deletionTimestamp") and ns not in excluded_names and not excluded_by_labels(labels):
            wanted.append(ns)
    problems: dict[str, list[str]] = {}
    for ns in sorted(wanted):
        secret = held.get(ns)
        labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
        if secret is None:
            problem = "missing"
        elif labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            problem = "not ours (no managed-by label: someone else's Secret of that name)"
        elif instance and labels.get(INSTANCE_LABEL, instance) != instance:
            problem = f"another installation's ({INSTANCE_LABEL}={labels.get(INSTANCE_LABEL)})"
        elif expiry("pull-secrets", name, secret, now).status == "fail":
            problem = "expired"
        else:
            continue
        problems.setdefault(problem, []).append(ns)
    bad = sum(len(names) for names in problems.values())
    if not bad:
        return passed("pull-secrets", name, f"present, ours and unexpired in all {len(wanted)} namespaces it serves")
    parts = []
    for problem, names in sorted(problems.items()):
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        parts.append(f"{problem} in {len(names)}: {', '.join(names[:SHOWN])}{more}")
    fixes = []
    if "missing" in problems or "expired" in problems:
        fixes.append(f"the controller writes it within seconds of a change: {CONTROLLER_LOGS} (SecretWriteFailed)")
    if set(problems) - {"missing", "expired"}:
        fixes.append("give this release its own secretName, or remove the other Secret of that name")
    return failed("pull-secrets", name, f"{bad} of {len(wanted)} namespaces: " + "; ".join(parts), "; ".join(fixes))


def webhook_configuration(cluster: Cluster, configuration: str, tls_secret: str, now: datetime.datetime) -> Result:
    name = f"webhook configuration {configuration}"
    admission: Any = client.AdmissionregistrationV1Api(cluster.api)
    try:
        found = call(
            "get mutatingwebhookconfigurations.admissionregistration.k8s.io",
            "",
            lambda: admission.read_mutating_webhook_configuration(
                configuration, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        secret = call(
            "get secrets",
            f"namespace {cluster.namespace}",
            lambda: cluster.core.read_namespaced_secret(
                tls_secret, cluster.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
    except Forbidden as error:
        return forbidden("webhook-configuration", name, error.rule, error.where)
    if found is None:
        return failed(
            "webhook-configuration",
            name,
            "not found: nothing calls the webhook",
            "install or upgrade the release (`helm upgrade --install`), or pass --webhook-configuration",
        )
    if secret is None:
        return failed(
            "webhook-configuration",
            name,
            f"no TLS Secret {cluster.namespace}/{tls_secret}: the webhook has no serving certificate",
            "in certificates.mode controller the controller makes it within seconds: "
            f"{CONTROLLER_LOGS}; in certManager mode check the Certificate",
        )
    try:
        serving = x509.load_pem_x509_certificate(base64.b64decode(((secret.get("data") or {}).get("tls.crt")) or ""))
    except ValueError:
        return failed("webhook-configuration", name, f"{tls_secret} holds no readable tls.crt", CONTROLLER_LOGS)
    unsigned = []
    for hook in found.get("webhooks") or []:
        bundle = base64.b64decode((hook.get("clientConfig") or {}).get("caBundle") or "")
        try:
            authorities = x509.load_pem_x509_certificates(bundle) if bundle else []
        except ValueError:
            authorities = []
        if not any(_signs(authority, serving) for authority in authorities):
            unsigned.append(str(hook.get("name")))
    if unsigned:
        return failed(
            "webhook-configuration",
            name,
            f"the caBundle of {', '.join(unsigned)} does not sign the serving certificate in {tls_secret}: "
            "the API server cannot call the webhook (TLS errors), so no pod is rewritten",
            "in certificates.mode controller the controller repairs the caBundle within seconds: "
            f"{CONTROLLER_LOGS}; in certManager mode check cert-manager's cainjector",
        )
    start, end = serving.not_valid_before_utc, serving.not_valid_after_utc
    expires = f"the serving certificate, signed by the caBundle, expires at {end.isoformat(timespec='seconds')}"
    if now >= end:
        return failed("webhook-configuration", name, f"{expires}: expired", CONTROLLER_LOGS)
    if now >= end - (end - start) * RENEW_FRACTION:
        return warned("webhook-configuration", name, f"{expires}: its renewal is overdue", CONTROLLER_LOGS)
    return passed("webhook-configuration", name, f"{expires} (in {(end - now).days} days)")


def _signs(authority: x509.Certificate, leaf: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def upstream_status_fresh(
    document: StatusDocument | None, problem: str, now: datetime.datetime, max_age: datetime.timedelta
) -> Result:
    name = "upstream status"
    if document is None:
        return failed(
            "upstream-status",
            name,
            f"{problem}: the webhook rewrites nothing",
            f"the leading controller publishes it: {CONTROLLER_LOGS}",
        )
    age = now - document.checked_at
    if age > max_age:
        return failed(
            "upstream-status",
            name,
            f"stale: published {int(age.total_seconds())}s ago, the webhook trusts it for "
            f"{int(max_age.total_seconds())}s: it rewrites nothing",
            f"the controller is not running or not leading: {CONTROLLER_LOGS}",
        )
    return passed(
        "upstream-status",
        name,
        f"published {int(age.total_seconds())}s ago (trusted for {int(max_age.total_seconds())}s)",
    )
