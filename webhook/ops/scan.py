"""`ecr-pullthrough scan`: what the webhook would do to every workload of a cluster, before it is enabled.

`report()` is pure: it takes the objects as the API server lists them and decides each
pod template with the webhook's own `mutate_pod`. Each pod is counted once: a pod owned by
a listed workload (through a ReplicaSet, a Job) is reported under that workload. A pod the
webhook already rewrote is reported from its `ecr-pullthrough/original-images` annotation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.mutate import ORIGINAL_IMAGES_ANNOTATION, PodPolicy, mutate_pod
from webhook.core.rewrite import Reason
from webhook.core.upstream_status import Verification

# Kinds with a pod template, and where it is. Listed in this order; a pod or workload owned by one
# of these kinds is reported under its owner.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
OWNERS = frozenset({*TEMPLATES, "Pod"})


@dataclass(frozen=True, slots=True)
class Row:
    namespace: str
    workload: str  # Kind/name
    container: str
    image: str
    result: str  # the rewritten image, or the image itself
    reason: str  # rewritten, already-rewritten, or why it stays
    detail: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # e.g. a kind we may not list

    def totals(self) -> dict[str, Any]:
        reasons = Counter(row.reason for row in self.rows)
        unverified = sorted({row.detail for row in self.rows if row.reason == Reason.UPSTREAM_UNVERIFIED})
        return {
            "images": len(self.rows),
            "through_the_cache": reasons[Reason.REWRITTEN] + reasons["already-rewritten"],
            "digest_pinned_left_alone": reasons[Reason.DIGEST_PINNED],
            "by_reason": dict(sorted(reasons.items())),
            "unverified_upstreams": unverified,
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "rows": [_row_dict(row) for row in self.rows],
                "totals": self.totals(),
                "problems": self.problems,
            },
            indent=2,
        )

    def to_text(self) -> str:
        lines = []
        namespace = None
        for row in sorted(self.rows, key=lambda r: (r.namespace, r.workload, r.container)):
            if row.namespace != namespace:
                namespace = row.namespace
                in_namespace = [r for r in self.rows if r.namespace == namespace]
                cached = sum(r.reason in (Reason.REWRITTEN, "already-rewritten") for r in in_namespace)
                lines.append(f"\n{namespace}  ({cached} of {len(in_namespace)} images through the cache)")
            why = row.reason + (f" ({row.detail})" if row.detail else "")
            shown = row.result if row.result != row.image else "unchanged"
            lines.append(f"  {row.workload}  {row.container}  {row.image}  ->  {shown}  [{why}]")
        totals = self.totals()
        lines.append(
            f"\n{totals['images']} images: {totals['through_the_cache']} through the cache, "
            f"{totals['digest_pinned_left_alone']} digest-pinned left alone"
        )
        for upstream in totals["unverified_upstreams"]:
            lines.append(f"unverified: {upstream}")
        lines.extend(f"problem: {problem}" for problem in self.problems)
        return "\n".join(lines).lstrip("\n") + "\n"


def _row_dict(row: Row) -> dict[str, str]:
    return {
        "namespace": row.namespace,
        "workload": row.workload,
        "container": row.container,
        "image": row.image,
        "result": row.result,
        "reason": str(row.reason),
        "detail": row.detail,
    }


def report(
    objects: Mapping[str, Iterable[Mapping[str, Any]]],
    namespaces: Iterable[Mapping[str, Any]],
    policy: PodPolicy,
    verified: Verification | None,
) -> Report:
    """Decide every pod template (`objects` by kind, as listed) and every pod no listed workload owns."""
    excluded = {
        (ns.get("metadata") or {}).get("name", "")
        for ns in namespaces
        if ((ns.get("metadata") or {}).get("labels") or {}).get(policy.opt_out_label) == "true"
    }
    listed = {
        (kind, (o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", ""))
        for kind, items in objects.items()
        for o in items
    }
    result = Report()
    for kind, items in objects.items():
        for obj in items:
            metadata = obj.get("metadata") or {}
            namespace = metadata.get("namespace", "")
            if any(
                (owner.get("kind"), namespace, owner.get("name")) in listed
                for owner in metadata.get("ownerReferences") or []
            ):
                continue  # reported under its owner
            pod = _pod_of(kind, obj)
            workload = f"{kind}/{metadata.get('name', '')}"
            if namespace in excluded:
                result.rows.extend(_left(namespace, workload, pod, "namespace-opted-out"))
                continue
            result.rows.extend(_decide(namespace, workload, pod, policy, verified))
    return result


def _pod_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if kind == "Pod":
        return obj
    template: Any = obj
    for key in TEMPLATES[kind]:
        template = (template or {}).get(key) if isinstance(template, Mapping) else None
    return template if isinstance(template, Mapping) else {}


def _decide(
    namespace: str, workload: str, pod: Mapping[str, Any], policy: PodPolicy, verified: Verification | None
) -> list[Row]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    originals = _originals(annotations.get(ORIGINAL_IMAGES_ANNOTATION))
    mutation = mutate_pod(pod, policy, namespace=namespace, verified=verified)
    if mutation.skipped:
        return _left(namespace, workload, pod, mutation.skipped)
    rows = []
    for item in mutation.containers:
        decision = item.decision
        if item.name in originals and decision.reason is Reason.ALREADY_ECR:
            rows.append(Row(namespace, workload, item.name, originals[item.name], decision.image, "already-rewritten"))
            continue
        rows.append(
            Row(namespace, workload, item.name, decision.original, decision.image, decision.reason, decision.detail)
        )
    return rows


def _left(namespace: str, workload: str, pod: Mapping[str, Any], why: str) -> list[Row]:
    spec = pod.get("spec") or {}
    return [
        Row(namespace, workload, str(c.get("name", "")), str(c.get("image", "")), str(c.get("image", "")), why)
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in (spec.get(key) or [])
        if isinstance(c, Mapping)
    ]


def _originals(value: object) -> dict[str, str]:
    try:
        parsed = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
