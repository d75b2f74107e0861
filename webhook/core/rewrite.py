"""The rewrite decision: one image string in, the new reference or the reason it is left alone out.

Everything that rewrites (the admission webhook, the `rewrite` command, audit
mode) calls `decide`; nothing else knows the rules. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from webhook.core import images
from webhook.core.upstream_status import WITH_PULL_SECRET, Target, Verification

DigestPolicy = Literal["skip", "rewrite"]

# Private ECR registry hosts, in every partition and endpoint flavour:
# <account>.dkr.ecr.<region>.amazonaws.com, .amazonaws.com.cn (China),
# dkr.ecr-fips (FIPS) and <account>.dkr-ecr.<region>.on.aws (dual-stack).
ECR_HOST = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr[.-]ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|on\.aws)$",
    re.IGNORECASE,
)


class Reason(StrEnum):
    """Why an image got the result it got; the words in logs, annotations and metrics."""

    REWRITTEN = "rewritten"
    OTHER_REGISTRY = "other-registry"
    ALREADY_ECR = "already-ecr"
    INVALID_REFERENCE = "invalid-reference"
    PATH_TOO_LONG = "path-too-long"
    EXCLUDED_IMAGE = "excluded-image"
    DIGEST_PINNED = "digest-pinned"
    UPSTREAM_UNVERIFIED = "upstream-unverified"
    # Pod-level reasons, decided by the webhook around `decide`.
    PULL_SECRET_MISSING = "pull-secret-missing"


@dataclass(frozen=True, slots=True)
class RewriteRules:
    """What `decide` needs of the settings, and nothing else."""

    registry: str
    docker_hub_prefix: str = "docker-hub"
    # Other upstream registry host (lowercase) -> ECR repository prefix.
    upstreams: Mapping[str, str] = field(default_factory=dict)
    digest_policy: DigestPolicy = "skip"
    # Globs matched against the normalised name, e.g. `docker.io/library/busybox`.
    exclude_images: tuple[str, ...] = ()

    @staticmethod
    def upstream_of(reference: images.ImageReference) -> str:
        """The upstream as the status document names it: docker.io for every Docker Hub host."""
        return reference.domain

    def status_target(self, pull_secret_mode: str = WITH_PULL_SECRET) -> Target:
        """The registry, prefixes and pull-secret mode an upstream status entry must have been verified for."""
        prefixes = {images.DOCKER_HUB: self.docker_hub_prefix, **self.upstreams}
        return Target(self.registry, prefixes, pull_secret_mode)

    def prefix_for(self, reference: images.ImageReference) -> str | None:
        """Hosts compare exactly, as containerd maps them: `QUAY.IO` is not the configured `quay.io`."""
        if reference.is_docker_hub:
            return self.docker_hub_prefix
        return self.upstreams.get(reference.domain)


@dataclass(frozen=True, slots=True)
class Decision:
    original: str
    image: str
    reason: Reason
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.image != self.original


def decide(image: str, rules: RewriteRules, verified: Verification | None = None) -> Decision:
    """Return the pull-through reference for `image`, or `image` itself with the reason it stays.

    With `verified`, an upstream the controller has not verified (no rule, a bad credential,
    no import permission, or no status at all) is left alone: a rewrite that cannot be pulled
    would be worse than no rewrite.
    """

    def unchanged(reason: Reason, detail: str = "") -> Decision:
        return Decision(original=image, image=image, reason=reason, detail=detail)

    try:
        reference = images.parse(image)
    except images.InvalidReferenceError as error:
        return unchanged(Reason.INVALID_REFERENCE, str(error))
    if ECR_HOST.match(reference.domain):
        return unchanged(Reason.ALREADY_ECR)
    prefix = rules.prefix_for(reference)
    if prefix is None:
        return unchanged(Reason.OTHER_REGISTRY, reference.domain or "a name without a registry host")
    for pattern in rules.exclude_images:
        if fnmatch.fnmatchcase(reference.name, pattern):
            return unchanged(Reason.EXCLUDED_IMAGE, pattern)
    if reference.digest is not None and rules.digest_policy == "skip":
        return unchanged(Reason.DIGEST_PINNED, "a first pull by digest is not imported by ECR pull-through")
    path = f"{prefix}/{reference.path}"
    if len(path) > images.MAX_PATH_LENGTH:
        return unchanged(Reason.PATH_TOO_LONG, f"{len(path)} > {images.MAX_PATH_LENGTH} characters")
    upstream = rules.upstream_of(reference)
    if verified is not None and upstream not in verified.verified:
        return unchanged(Reason.UPSTREAM_UNVERIFIED, verified.reason_for(upstream))
    rewritten = images.ImageReference(domain=rules.registry, path=path, tag=reference.tag, digest=reference.digest)
    return Decision(original=image, image=str(rewritten), reason=Reason.REWRITTEN)


class DecisionCache:
    """`decide` for one set of rules, remembered: pods repeat the same few images endlessly.

    A decision depends on the image string, the rules and the verification snapshot, and on
    nothing else. The rules are fixed for the cache's life; the memo is emptied whenever the
    snapshot is not the one it was filled under (compared by value), so an answer never
    outlives the facts it came from. At most `maxsize` entries (oldest dropped first), so
    endless distinct strings cannot grow memory.
    """

    def __init__(self, rules: RewriteRules, maxsize: int = 4096) -> None:
        self.rules, self.maxsize = rules, maxsize
        # (snapshot, memo) swapped as one object, so a thread never files a decision under another snapshot.
        self._state: tuple[Verification | None, dict[str, Decision]] = (None, {})

    def decide(self, image: str, verified: Verification | None = None) -> Decision:
        state = self._state
        if state[0] is not verified:
            state = (verified, state[1] if state[0] == verified else {})
            self._state = state
        memo = state[1]
        found = memo.get(image)
        if found is None:
            found = decide(image, self.rules, verified)
            if len(memo) >= self.maxsize:
                # Threads (large reviews are decided off the event loop) may race here: losing an
                # entry is harmless, and the memo exceeds `maxsize` by at most one per racing thread.
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del memo[next(iter(memo))]
            memo[image] = found
        return found
