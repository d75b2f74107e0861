"""What the webhook does to one pod: decisions per container, and the JSON patch that applies them.

The patch is built directly from the decisions (one operation per rewritten
image, plus the pull secret unless the nodes pull with their own role, and the annotation), never by diffing whole pods:
a diff costs milliseconds on every pod creation. `Mutation.apply` builds the
mutated copy independently, and the tests prove that the patch, applied,
equals it. Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from webhook.core.rewrite import Decision, DecisionCache, Reason, RewriteRules, decide
from webhook.core.upstream_status import WITH_PULL_SECRET, PullSecretMode, Verification

Mode = Literal["enforce", "audit"]
ContainerField = Literal["initContainers", "containers", "ephemeralContainers"]
CONTAINER_FIELDS: tuple[ContainerField, ...] = ("initContainers", "containers", "ephemeralContainers")

# Container name -> original image, for every image this webhook rewrote.
ORIGINAL_IMAGES_ANNOTATION = "ecr-pullthrough/original-images"
# Container name -> the image enforce mode would have produced (audit mode only).
AUDIT_ANNOTATION = "ecr-pullthrough/would-rewrite"
# Static pods mirrored by the kubelet carry this; they cannot be changed meaningfully.
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
EPHEMERAL_SUBRESOURCE = "ephemeralcontainers"


@dataclass(frozen=True, slots=True)
class PodPolicy:
    """What the pod mutation needs of the settings."""

    rules: RewriteRules
    secret_name: str = "ecr-pullthrough"
    opt_out_label: str = "ecr-pullthrough/skip"
    exclude_namespaces: frozenset[str] = frozenset({"kube-system"})
    mode: Mode = "enforce"
    pull_secret_mode: PullSecretMode = WITH_PULL_SECRET

    @property
    def adds_pull_secret(self) -> bool:
        return self.pull_secret_mode == WITH_PULL_SECRET


class ContainerDecision(NamedTuple):
    """One container's decision (a tuple: a pod makes one per container, on every admission)."""

    field: ContainerField
    position: int  # in its list: the patch's path
    name: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Mutation:
    """The outcome for one pod: why it was skipped, or what each container got, and the patch."""

    skipped: str | None = None
    containers: tuple[ContainerDecision, ...] = ()
    patch: list[dict[str, Any]] = field(default_factory=list)
    mode: Mode = "enforce"

    @property
    def rewritten(self) -> tuple[ContainerDecision, ...]:
        return tuple(c for c in self.containers if c.decision.reason is Reason.REWRITTEN)

    def apply(self, pod: Mapping[str, Any], policy: PodPolicy, sub_resource: str = "") -> dict[str, Any]:
        """The mutated copy of `pod`, built from the decisions without the patch (for tests and the demo)."""
        mutated: dict[str, Any] = copy.deepcopy(dict(pod))
        rewritten = self.rewritten
        if not rewritten:
            return mutated
        spec = mutated.setdefault("spec", {})
        if self.mode == "enforce":
            for item in rewritten:
                spec[item.field][item.position]["image"] = item.decision.image
        if sub_resource == EPHEMERAL_SUBRESOURCE:
            return mutated
        if self.mode == "enforce" and policy.adds_pull_secret and not _has_pull_secret(spec, policy.secret_name):
            spec["imagePullSecrets"] = [*(spec.get("imagePullSecrets") or []), {"name": policy.secret_name}]
        key, value = _annotation(pod, rewritten, self.mode)
        metadata = mutated.setdefault("metadata", {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), key: value}
        return mutated


def mutate_pod(
    pod: Mapping[str, Any],
    policy: PodPolicy,
    *,
    namespace: str,
    sub_resource: str = "",
    old_pod: Mapping[str, Any] | None = None,
    verified: Verification | None = None,
    cache: DecisionCache | None = None,
) -> Mutation:
    """Decide every container image of `pod` and build the minimal patch.

    `cache`, if given, must hold `policy.rules`. A pod whose shape no API server would send
    (a field of the wrong JSON type on the way to an image) is skipped: a patch for it
    might not apply.
    """
    on_subresource = sub_resource == EPHEMERAL_SUBRESOURCE
    fields: Sequence[ContainerField] = ("ephemeralContainers",) if on_subresource else CONTAINER_FIELDS
    problem = _malformed(pod, fields)
    if problem:
        return Mutation(skipped=f"malformed-pod: {problem}", mode=policy.mode)
    metadata = pod.get("metadata") or {}
    if (metadata.get("annotations") or {}).get(MIRROR_POD_ANNOTATION) is not None:
        return Mutation(skipped="mirror-pod", mode=policy.mode)
    if (metadata.get("labels") or {}).get(policy.opt_out_label) == "true":
        return Mutation(skipped="pod-opted-out", mode=policy.mode)
    if namespace in policy.exclude_namespaces:
        return Mutation(skipped="namespace-excluded", mode=policy.mode)

    spec = pod.get("spec") or {}
    # On the subresource only new ephemeral containers may change; a pod's pull
    # secrets are fixed after creation, so rewrite only if ours is already there
    # (in node-role mode the node's own credentials pull, and no secret is needed).
    existing = _container_names(old_pod, "ephemeralContainers") if on_subresource else set()
    secret_present = not policy.adds_pull_secret or _has_pull_secret(spec, policy.secret_name)
    decisions: list[ContainerDecision] = []
    for field_name in fields:
        for index, container in enumerate(spec.get(field_name) or []):
            name = _name(container)
            if name in existing:
                continue
            image = container.get("image")
            image = image if isinstance(image, str) else ""
            decision = cache.decide(image, verified) if cache else decide(image, policy.rules, verified)
            if on_subresource and decision.changed and not secret_present:
                decision = Decision(
                    original=decision.original,
                    image=decision.original,
                    reason=Reason.PULL_SECRET_MISSING,
                    detail=f"the pod does not list pull secret {policy.secret_name}",
                )
            decisions.append(ContainerDecision(field=field_name, position=index, name=name, decision=decision))
    rewritten = [c for c in decisions if c.decision.reason is Reason.REWRITTEN]
    return Mutation(containers=tuple(decisions), mode=policy.mode, patch=_patch(pod, rewritten, policy, on_subresource))


def _patch(
    pod: Mapping[str, Any], rewritten: Sequence[ContainerDecision], policy: PodPolicy, on_subresource: bool
) -> list[dict[str, Any]]:
    if not rewritten:
        return []
    operations: list[dict[str, Any]] = []
    spec = pod.get("spec") or {}
    if policy.mode == "enforce":
        operations += [
            {"op": "replace", "path": f"/spec/{c.field}/{c.position}/image", "value": c.decision.image}
            for c in rewritten
        ]
    if on_subresource:
        return operations
    if policy.mode == "enforce" and policy.adds_pull_secret and not _has_pull_secret(spec, policy.secret_name):
        if spec.get("imagePullSecrets"):
            operations.append({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": policy.secret_name}})
        else:
            operations.append({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": policy.secret_name}]})
    key, value = _annotation(pod, rewritten, policy.mode)
    metadata = pod.get("metadata") or {}
    if pod.get("metadata") is None:  # absent or null: `add` creates or replaces the member
        operations.append({"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}})
    elif metadata.get("annotations") is None:
        operations.append({"op": "add", "path": "/metadata/annotations", "value": {key: value}})
    else:
        operations.append({"op": "add", "path": f"/metadata/annotations/{escape_pointer(key)}", "value": value})
    return operations


def _annotation(pod: Mapping[str, Any], rewritten: Sequence[ContainerDecision], mode: Mode) -> tuple[str, str]:
    """The annotation key and its JSON map, merged with what an earlier invocation recorded."""
    key = ORIGINAL_IMAGES_ANNOTATION if mode == "enforce" else AUDIT_ANNOTATION
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    previous = annotations.get(key)
    try:
        recorded = json.loads(previous) if isinstance(previous, str) and previous else {}
    except (json.JSONDecodeError, RecursionError):
        recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    for item in rewritten:
        recorded[item.name] = item.decision.original if mode == "enforce" else item.decision.image
    return key, json.dumps(recorded, sort_keys=True, separators=(",", ":"))


def _has_pull_secret(spec: Mapping[str, Any], name: str) -> bool:
    return any(isinstance(s, Mapping) and s.get("name") == name for s in spec.get("imagePullSecrets") or [])


def _container_names(pod: Mapping[str, Any] | None, field_name: ContainerField) -> set[str]:
    if not pod:
        return set()
    spec = pod.get("spec")
    containers = spec.get(field_name) if isinstance(spec, Mapping) else None
    if not isinstance(containers, list):
        return set()
    return {_name(c) for c in containers if isinstance(c, Mapping)}


def _name(container: Mapping[str, Any]) -> str:
    name = container.get("name", "")
    return name if isinstance(name, str) else ""


def _malformed(pod: Mapping[str, Any], fields: Sequence[ContainerField]) -> str:
    """What makes `pod` a shape no API server sends, on the paths we read or patch; "" when none."""
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        return "metadata is not an object"
    for key in ("annotations", "labels"):
        if metadata and metadata.get(key) is not None and not isinstance(metadata[key], Mapping):
            return f"metadata.{key} is not an object"
    spec = pod.get("spec")
    if spec is None:
        return ""
    if not isinstance(spec, Mapping):
        return "spec is not an object"
    for key in (*fields, "imagePullSecrets"):
        value = spec.get(key)
        if value is not None and not isinstance(value, list):
            return f"spec.{key} is not a list"
    for key in fields:
        if not all(isinstance(container, Mapping) for container in spec.get(key) or []):
            return f"spec.{key} holds something that is not an object"
    return ""


def escape_pointer(token: str) -> str:
    """Escape one JSON-pointer reference token (RFC 6901): `~` -> `~0`, `/` -> `~1`."""
    return token.replace("~", "~0").replace("/", "~1")
