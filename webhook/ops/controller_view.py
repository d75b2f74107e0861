"""`doctor`'s view of the controller: what it published (the upstream status ConfigMap, the pull Secret of
its own namespace, Warning Events; its /metrics when reachable), which its role can prove and the
operator's own credentials cannot."""

from __future__ import annotations

import datetime
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from webhook.controller.kube import REQUEST_TIMEOUT
from webhook.controller.secrets import COMPONENT
from webhook.core.pullsecret import EXPIRES_ANNOTATION
from webhook.core.upstream_status import StatusDocument, Target, verification
from webhook.ops.checklist import Result, failed, forbidden, passed, warned
from webhook.ops.kubeapi import Cluster, Forbidden, call

# A token is renewed half-way through its 12 hours; less than this left means a renewal is overdue.
TOKEN_WARN = datetime.timedelta(hours=5)
EVENTS_SINCE = datetime.timedelta(hours=1)
CONTROLLER_LOGS = "read the leader's log (`kubectl -n <namespace> logs deploy/<release>-controller`) and its Events"


def upstreams(
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
        elif status.degraded_since is not None and status.upstream in trusted.trial:
            since = status.degraded_since.isoformat(timespec="seconds")
            results.append(
                failed(
                    "controller",
                    name,
                    f"degraded since {since}: {status.degraded_reason}; new pods keep their original images"
                    + (f" (one in {status.trial_one_in} is still rewritten)" if status.trial_one_in else ""),
                    "the nodes cannot pull what the controller's probe can: check the node role's ECR permissions, "
                    "a KMS key on the repository creation template, the repository quota and the network path "
                    "from the nodes (README: the pull-outcome guard)",
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


def token(cluster: Cluster, secret_name: str, now: datetime.datetime) -> Result:
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
    return expiry("controller", name, secret, now)


def expiry(check: str, name: str, secret: dict[str, Any], now: datetime.datetime) -> Result:
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


def events(cluster: Cluster, now: datetime.datetime) -> Result:
    """Warning Events the controller recorded in the last hour, anywhere (SecretWriteFailed, UpstreamUnverified...)."""
    name = "controller's Warning Events (last hour)"
    try:
        found = call(
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


def metrics(url: str, now: datetime.datetime) -> list[Result]:
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
