"""`doctor`'s cluster checks, read through the operator's kubeconfig.

- the controller's view: what it published (the upstream status ConfigMap, the pull Secret of its
  own namespace, Warning Events; its /metrics when reachable), which its role can prove and the
  operator's credentials cannot;
- the pull Secret in every namespace that should have it: present, ours, unexpired;
- the webhook configuration: present, its caBundle signing the serving certificate of the TLS Secret;
- the upstream status: published, and fresh enough for the webhook to trust.

Secrets are read as metadata only (PartialObjectMetadata): no token ever reaches this process.
"""

from __future__ import annotations

import base64
import datetime
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from webhook.controller.kube import REQUEST_TIMEOUT, body
from webhook.controller.secrets import COMPONENT
from webhook.controller.webhookcerts import RENEW_FRACTION
from webhook.core.pullsecret import EXPIRES_ANNOTATION, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from webhook.core.selectors import Selector
from webhook.core.upstream_status import DOCUMENT_KEY, StatusDocument, Target, verification
from webhook.ops.checklist import Result, failed, forbidden, passed, warned

METADATA_ONLY = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
METADATA_LIST = {"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}
# A token is renewed half-way through its 12 hours; less than this left means a renewal is overdue.
TOKEN_WARN = datetime.timedelta(hours=5)
EVENTS_SINCE = datetime.timedelta(hours=1)
SHOWN = 5  # namespaces named per problem; the rest are counted
CONTROLLER_LOGS = "read the leader's log (`kubectl -n <namespace> logs deploy/<release>-controller`) and its Events"


class Forbidden(Exception):
    def __init__(self, rule: str, where: str = "") -> None:
        super().__init__(rule)
        self.rule, self.where = rule, where


def _call(rule: str, where: str, call: Callable[[], Any]) -> dict[str, Any] | None:
    """The JSON body, None on 404; Forbidden on 403 (the rule to grant)."""
    try:
        return body(call())
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
        found = _call(
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
        return _call(
            "get secrets",
            f"namespace {namespace}",
            lambda: self.core.read_namespaced_secret(
                name, namespace, _headers=METADATA_ONLY, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )


# -- the controller's view ---------------------------------------------------------------------------------


def controller_upstreams(
    document: StatusDocument | None, problem: str, target: Target, now: datetime.datetime, max_age: datetime.timedelta
) -> list[Result]:
    """Each upstream's rule, credential and import permission, as the controller's role found them."""
    if document is None:
        return [
            failed(
                "controller",
                "controller's upstream checks",
                f"nothing published ({problem})",
                f"the controller publishes this once it leads and has a token: {CONTROLLER_LOGS}",
            )
        ]
    trusted = verification(document, now, max_age, target=target)
    results = []
    for status in document.upstreams:
        name = f"upstream {status.upstream} (prefix {status.prefix})"
        checked = status.checked_at.isoformat(timespec="seconds")
        if status.upstream in trusted.verified and status.held_since is None:
            message = f"rule, credential and import permission verified by the controller at {checked}"
            results.append(passed("controller", name, message))
        elif status.upstream in trusted.verified:
            results.append(
                warned(
                    "controller",
                    name,
                    f"held verified through transient errors since {status.held_since}: {status.reason}",
                    "nothing yet: it flips to unverified after 3 failures over 5 minutes; check the path to ECR",
                )
            )
        else:
            reason = trusted.reasons.get(status.upstream) or trusted.reason_for(status.upstream)
            results.append(
                failed("controller", name, f"unverified: {reason}", "do what the reason says (README, Troubleshooting)")
            )
    for upstream in sorted(set(target.prefixes) - {s.upstream for s in document.upstreams}):
        results.append(
            failed(
                "controller",
                f"upstream {upstream}",
                "not in the controller's status: it was never verified",
                "the controller verifies every upstream in its settings: give it the same upstreams as the webhook",
            )
        )
    return results


def controller_token(cluster: Cluster, secret_name: str, now: datetime.datetime) -> Result:
    """The token the controller holds, from the pull Secret of its own namespace (its annotation only)."""
    name = "ECR token"
    try:
        secret = cluster.secret_metadata(secret_name, cluster.namespace)
    except Forbidden as error:
        return forbidden("controller", name, error.rule, error.where)
    if secret is None:
        return failed(
            "controller",
            name,
            f"no pull Secret {cluster.namespace}/{secret_name}: the controller has no token yet",
            f"the controller's /readyz body names the problem (GetAuthorizationToken, IRSA): {CONTROLLER_LOGS}",
        )
    return _expiry("controller", name, secret, now)


def _expiry(check: str, name: str, secret: dict[str, Any], now: datetime.datetime) -> Result:
    value = ((secret.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION, "")
    try:
        expires = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return failed(check, name, f"the pull Secret has no {EXPIRES_ANNOTATION}", CONTROLLER_LOGS)
    left = expires - now
    when = f"{expires.isoformat(timespec='seconds')} (in {_duration(left)})"
    if left <= datetime.timedelta(0):
        return failed(
            check,
            name,
            f"expired at {expires.isoformat(timespec='seconds')}: pulls through the cache fail",
            f"the controller cannot renew it (GetAuthorizationToken, IRSA): {CONTROLLER_LOGS}",
        )
    if left < TOKEN_WARN:
        return warned(check, name, f"expires at {when}: its renewal is overdue", CONTROLLER_LOGS)
    return passed(check, name, f"expires at {when}")


def _duration(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "the past"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def controller_events(cluster: Cluster, now: datetime.datetime) -> Result:
    """Warning Events the controller recorded in the last hour, anywhere (SecretWriteFailed, UpstreamUnverified...)."""
    name = "controller's Warning Events (last hour)"
    try:
        found = _call(
            "list events",
            "all namespaces",
            lambda: cluster.core.list_event_for_all_namespaces(
                field_selector="type=Warning", _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
    except Forbidden as error:
        return forbidden("controller", name, error.rule, error.where)
    recent = []
    for event in (found or {}).get("items") or []:
        if (event.get("source") or {}).get("component") != COMPONENT:
            continue
        stamp = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp")
        )
        try:
            when = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            continue
        if now - when <= EVENTS_SINCE:
            recent.append((when, event))
    if not recent:
        return passed("controller", name, "none")
    reasons = Counter(str(event.get("reason")) for _, event in recent)
    latest = max(recent, key=lambda pair: pair[0])[1]
    where = (latest.get("involvedObject") or {}).get("namespace", "")
    summary = ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items()))
    return warned(
        "controller",
        name,
        f"{summary}; latest ({latest.get('reason')} in {where}): {latest.get('message')}",
        "`kubectl get events -A --field-selector type=Warning` lists them; each names what to fix",
    )


def controller_metrics(url: str, now: datetime.datetime) -> list[Result]:
    """From the controller's /metrics (a port-forward to one replica): leading, token, namespaces in sync."""
    name = "controller's metrics"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=5) as answer:  # noqa: S310 (operator's URL)
            text = answer.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return [failed("controller", name, f"{url} did not answer ({error})", "check --controller-url")]
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    if not samples.get("ecr_pullthrough_leader"):
        return [
            warned(
                "controller",
                name,
                "this replica is a standby: its metrics say nothing about tokens or namespaces",
                "port-forward to the leader (the holder of the controller's Lease)",
            )
        ]
    results = []
    expiry = samples.get("ecr_pullthrough_token_expiry_timestamp_seconds", 0.0)
    left = datetime.timedelta(seconds=expiry - now.timestamp())
    message = f"the leader's token expires in {_duration(left)}"
    if expiry <= now.timestamp():
        results.append(failed("controller", "ECR token (metrics)", message, CONTROLLER_LOGS))
    else:
        results.append(passed("controller", "ECR token (metrics)", message))
    total = samples.get("ecr_pullthrough_namespaces", 0.0)
    in_sync = samples.get("ecr_pullthrough_namespaces_in_sync", 0.0)
    counted = f"{int(in_sync)} of {int(total)} namespaces in sync"
    if in_sync < total:
        results.append(warned("controller", "namespaces (metrics)", counted, CONTROLLER_LOGS))
    else:
        results.append(passed("controller", "namespaces (metrics)", counted))
    return results


# -- the pull Secret everywhere ----------------------------------------------------------------------------


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
        namespaces = _call(
            "list namespaces",
            "",
            lambda: cluster.core.list_namespace(
                _headers=METADATA_LIST, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        secrets = _call(
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
        elif _expiry("pull-secrets", name, secret, now).status == "fail":
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


# -- the webhook configuration and its certificate ---------------------------------------------------------


def webhook_configuration(cluster: Cluster, configuration: str, tls_secret: str, now: datetime.datetime) -> Result:
    name = f"webhook configuration {configuration}"
    admission: Any = client.AdmissionregistrationV1Api(cluster.api)
    try:
        found = _call(
            "get mutatingwebhookconfigurations.admissionregistration.k8s.io",
            "",
            lambda: admission.read_mutating_webhook_configuration(
                configuration, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        secret = _call(
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


# -- the upstream status -----------------------------------------------------------------------------------


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
