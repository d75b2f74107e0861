"""Verifying each upstream end to end, so the webhook rewrites only what the cache can serve.

For each upstream (Docker Hub and every entry of the upstream map):
1. a pull-through cache rule exists for its prefix and points at that upstream
   (`DescribePullThroughCacheRules`, all rules, so a rule under another prefix is named);
2. if the rule has an upstream credential, it validates (`ValidatePullThroughCacheRule`);
3. a real registry request through the cache with our token succeeds: a manifest
   HEAD for a small, well-known image of that upstream, which proves the rule, the
   credential and the IAM import permission together (the first such request
   creates that one cache repository). Upstreams without a probe image skip it.
Each failure becomes one sentence that says what is wrong and what to fix, and is
either definitive (the setup is wrong: flip at once) or transient (throttling, 5xx,
timeouts: held, see `upstream_status.advance`). Every call names the configured
registry (`registryId`, the registry host), never just the caller's own account.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from webhook.controller.ecr import AwsError, classify
from webhook.core.images import DOCKER_HUB, DOCKER_HUB_ALIASES
from webhook.core.token import Token
from webhook.core.upstream_status import WITH_PULL_SECRET, Check

# Small, public, long-lived images per upstream; the probe pulls only a manifest.
DEFAULT_PROBES: dict[str, str] = {
    DOCKER_HUB: "library/hello-world:latest",
    "public.ecr.aws": "docker/library/hello-world:latest",
    "registry.k8s.io": "pause:3.10",
    "quay.io": "prometheus/busybox:latest",
}
# The upstream registry URL an ECR rule names for Docker Hub.
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str  # docker.io, ghcr.io, ...
    prefix: str
    probe: str | None  # repository:tag to HEAD through the cache, or None

    @property
    def registry_url(self) -> str:
        return DOCKER_HUB_REGISTRY if self.name == DOCKER_HUB else self.name

    def served_by(self, rule: Mapping[str, Any]) -> bool:
        url = str(rule.get("upstreamRegistryUrl", "")).lower().removeprefix("https://").rstrip("/")
        return url in DOCKER_HUB_ALIASES if self.name == DOCKER_HUB else url == self.name


def configured_upstreams(
    docker_hub_prefix: str, upstreams: Mapping[str, str], probes: Mapping[str, str]
) -> list[Upstream]:
    merged = {**DEFAULT_PROBES, **probes}
    entries = {DOCKER_HUB: docker_hub_prefix, **upstreams}
    return [Upstream(name, prefix, merged.get(name) or None) for name, prefix in entries.items()]


class Verifier:
    def __init__(
        self,
        ecr: Any,
        upstreams: list[Upstream],
        token: Callable[[], Token | None],
        *,
        registry: str,
        registry_id: str,
        registry_url: str = "",
        http_timeout: float = 10,
        pull_secret_mode: str = WITH_PULL_SECRET,
        principal: str = "the controller's IAM role",
    ) -> None:
        """`pull_secret_mode` is recorded with every result: what the pulls it proved will use. `principal`
        names, in messages, whose permissions the token carries."""
        self.ecr, self.upstreams, self.token, self.http_timeout = ecr, upstreams, token, http_timeout
        self.registry = registry  # recorded in every entry: the webhook trusts it only for this registry
        self.registry_id = registry_id
        self.pull_secret_mode, self.principal = pull_secret_mode, principal
        self.registry_url = (registry_url or f"https://{registry}").rstrip("/")

    def verify(self, now: datetime.datetime, token_problem: str | None = None) -> list[Check]:
        """One check per upstream; none while a new leader still waits for its first token.

        Every upstream fails while the token the Secrets hold has expired, or while there is
        no token and `token_problem` says why (transient: the Secrets may still hold a good one).
        """
        token = self.token()
        if token is None:
            if token_problem is None:
                return []
            reason = f"no ECR token: {token_problem}"
            return [Check(u.name, u.prefix, reason, transient=True) for u in self.upstreams]
        if not token.valid(now):
            reason = (
                f"the ECR token expired at {token.expires_at.isoformat(timespec='seconds')} and could not be renewed: "
                "pulls through the cache fail until it is (see the controller's /readyz and Events)"
            )
            return [Check(u.name, u.prefix, reason) for u in self.upstreams]
        try:
            rules = self._rules()
        except AwsError as error:
            reason = f"ECR DescribePullThroughCacheRules failed ({error}): check the region and the IAM role"
            return [Check(u.name, u.prefix, reason, error.transient) for u in self.upstreams]
        return [self._check(upstream, rules, token) for upstream in self.upstreams]

    def check_rules(self) -> list[Check]:
        """Each upstream's rule and credential, without the pull through the cache (which needs a token).

        What `ecr-pullthrough doctor` asks with the operator's own credentials."""
        try:
            rules = self._rules()
        except AwsError as error:
            reason = f"ECR DescribePullThroughCacheRules failed ({error}): check the region and the IAM permissions"
            return [Check(u.name, u.prefix, reason, error.transient) for u in self.upstreams]
        return [Check(u.name, u.prefix, *self._rule_problem(u, rules)) for u in self.upstreams]

    def _rules(self) -> dict[str, dict[str, Any]]:
        rules: dict[str, dict[str, Any]] = {}
        try:
            pages = self.ecr.get_paginator("describe_pull_through_cache_rules").paginate(registryId=self.registry_id)
            for page in pages:
                for rule in page.get("pullThroughCacheRules", []):
                    rules[rule["ecrRepositoryPrefix"]] = rule
        except (ClientError, BotoCoreError) as error:
            raise classify(error) from None
        return rules

    def _check(self, upstream: Upstream, rules: dict[str, dict[str, Any]], token: Token | None) -> Check:
        problem, transient = self._problem(upstream, rules, token)
        return Check(upstream.name, upstream.prefix, problem, transient)

    def _problem(
        self, upstream: Upstream, rules: dict[str, dict[str, Any]], token: Token | None
    ) -> tuple[str | None, bool]:
        """(None, False) when verified, else one sentence saying what is wrong and what to fix, and
        whether the error is transient."""
        problem, transient = self._rule_problem(upstream, rules)
        if problem is not None or upstream.probe is None:
            return problem, transient
        return self._probe_problem(upstream, token)

    def _rule_problem(self, upstream: Upstream, rules: dict[str, dict[str, Any]]) -> tuple[str | None, bool]:
        """The rule for the upstream's prefix, pointing at it, with a valid credential if it has one."""
        rule = rules.get(upstream.prefix)
        if rule is None:
            elsewhere = sorted(prefix for prefix, r in rules.items() if upstream.served_by(r))
            if elsewhere:
                return (
                    f"no pull-through cache rule has the prefix {upstream.prefix}, but the rule for "
                    f"{upstream.registry_url} has the prefix {elsewhere[0]}: set that prefix here, or create the rule"
                ), False
            return (
                f"no pull-through cache rule for {upstream.registry_url}: create one with "
                f"`aws ecr create-pull-through-cache-rule --ecr-repository-prefix {upstream.prefix} "
                f"--upstream-registry-url {upstream.registry_url}`"
            ), False
        if not upstream.served_by(rule):
            return (
                f"the pull-through cache rule with the prefix {upstream.prefix} points at "
                f"{rule.get('upstreamRegistryUrl')}, not {upstream.registry_url}: fix the prefix or the rule"
            ), False
        if rule.get("credentialArn"):
            return self._credential_problem(upstream, str(rule["credentialArn"]))
        return None, False

    def _credential_problem(self, upstream: Upstream, credential: str) -> tuple[str | None, bool]:
        try:
            answer = self.ecr.validate_pull_through_cache_rule(
                ecrRepositoryPrefix=upstream.prefix, registryId=self.registry_id
            )
        except (ClientError, BotoCoreError) as error:
            failed = classify(error)
            return f"ECR ValidatePullThroughCacheRule failed ({failed}): check the IAM role", failed.transient
        if answer.get("isValid") is True:
            return None, False
        failure = answer.get("failure") or "no reason given"
        return (
            f"the upstream credential of the rule {upstream.prefix} is not valid ({failure}): "
            f"fix the Secrets Manager secret {credential}"
        ), False

    def _probe_problem(self, upstream: Upstream, token: Token | None) -> tuple[str | None, bool]:
        if token is None:
            return "no ECR token yet, so the cache could not be tried", True
        assert upstream.probe is not None
        repository, _, tag = upstream.probe.rpartition(":")
        # The configured registry, not the token's proxyEndpoint: that one is the caller's own account.
        url = f"{self.registry_url}/v2/{upstream.prefix}/{repository}/manifests/{tag}"
        basic = base64.b64encode(f"{token.username}:{token.password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (the configured registry's https endpoint)
            url, method="HEAD", headers={"Authorization": f"Basic {basic}", "Accept": MANIFEST_TYPES}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout):  # noqa: S310
                return None, False
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        except (OSError, http.client.HTTPException) as error:
            return (
                f"the registry request through the cache failed ({type(error).__name__}): is ECR reachable?",
                True,
            )
        if status in (401, 403):
            return (
                f"pulling {upstream.probe} through the cache was refused (HTTP {status}): {self.principal} "
                f"needs ecr:BatchImportUpstreamImage and ecr:CreateRepository on repository/{upstream.prefix}/*"
            ), False
        if status == 404:
            return (
                f"{upstream.probe} was not found through the cache (HTTP 404): check the rule's upstream, "
                "or set another probe image for this upstream"
            ), False
        return f"pulling {upstream.probe} through the cache failed (HTTP {status})", status >= 500 or status == 429
