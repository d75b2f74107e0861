"""One typed settings model for every command.

Each setting is a flag (`--digest-policy`) and an environment variable
(`ECR_PULLTHROUGH_DIGEST_POLICY`); a flag wins. The chart hands the same
environment to the webhook and the controller, so they can never disagree on
registry, prefix, pull-secret name or exclusions. Settings are read once, at
start, validated, and passed down; nothing reads the environment later.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhook.core.images import DOCKER_HUB, DOCKER_HUB_ALIASES
from webhook.core.pull_outcomes import Thresholds
from webhook.core.rewrite import ECR_HOST, DigestPolicy, RewriteRules
from webhook.core.selectors import parse_selector

ENV_PREFIX = "ECR_PULLTHROUGH_"
# ecrRepositoryPrefix of CreatePullThroughCacheRule (botocore's ECR service model): 2-30 characters.
ECR_REPOSITORY_PREFIX = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# A Kubernetes object name (DNS-1123 subdomain) and a label key (optional DNS prefix, then a name).
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_KEY = re.compile(
    r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# A label value: at most 63 characters, alphanumeric at both ends.
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
AWS_ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+$")


def _split_list(value: Any) -> Any:
    """Accept `a,b` as well as JSON `["a","b"]` from the environment."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _secret_name(value: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        raise ValueError("a Secret name is a lowercase DNS subdomain, e.g. ecr-pullthrough")
    return value


def _split_map(value: Any) -> Any:
    """Accept `host=prefix,host=prefix` as well as JSON `{"host": "prefix"}`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text)
        pairs = [item.strip() for item in text.split(",") if item.strip()]
        if any("=" not in pair for pair in pairs):
            raise ValueError("expected host=prefix pairs separated by commas, or a JSON object")
        return dict(pair.split("=", 1) for pair in pairs)
    return value


class CommonSettings(BaseSettings):
    """Settings every command shares (webhook, controller, rewrite)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        cli_kebab_case=True,
        cli_avoid_json=True,
        cli_hide_none_type=True,
        validate_default=True,
    )

    registry: str | None = Field(
        None,
        description="ECR registry host, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com "
        "(or give --account-id and --region instead)",
    )
    account_id: str | None = Field(None, description="AWS account id of the registry (with --region)")
    region: str | None = Field(None, description="AWS region of the registry (with --account-id)")
    prefix: str = Field("docker-hub", description="ECR repository prefix of the Docker Hub pull-through rule")
    upstreams: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="other upstream registry host -> ECR prefix, e.g. ghcr.io=github,quay.io=quay",
    )
    digest_policy: DigestPolicy = Field(
        "skip", description="digest-pinned images: skip (not imported on first pull by digest) or rewrite"
    )
    secret_name: str = Field("ecr-pullthrough", description="name of the pull secret added to pods")
    opt_out_label: str = Field(
        "ecr-pullthrough/skip", description='label key that opts a pod or namespace out when set to "true"'
    )
    exclude_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["kube-system"], description="namespaces never touched"
    )
    exclude_images: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="globs on the normalised name (docker.io/library/busybox) left alone"
    )
    mode: Literal["enforce", "audit"] = Field(
        "enforce", description="enforce rewrites; audit only records what it would rewrite"
    )
    pull_secret_mode: Literal["secret", "node-role"] = Field(
        "secret",
        description="secret: the controller keeps a pull secret in every namespace and the webhook adds it to "
        "pods; node-role: the nodes pull through the cache with their own role (the kubelet's ECR credential "
        "provider), so no Secret is written and pods get none",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    _split_lists = field_validator("exclude_namespaces", "exclude_images", mode="before")(_split_list)
    _split_maps = field_validator("upstreams", mode="before")(_split_map)

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not (2 <= len(value) <= 30 and ECR_REPOSITORY_PREFIX.match(value)):
            raise ValueError("an ECR repository prefix is 2-30 lowercase characters, e.g. docker-hub")
        return value

    @field_validator("upstreams")
    @classmethod
    def _check_upstreams(cls, value: dict[str, str]) -> dict[str, str]:
        upstreams = {host.strip().lower(): prefix.strip() for host, prefix in value.items()}
        for host, prefix in upstreams.items():
            if host in DOCKER_HUB_ALIASES:
                raise ValueError(f"{host} is Docker Hub: set its prefix with --prefix")
            if not (2 <= len(prefix) <= 30 and ECR_REPOSITORY_PREFIX.match(prefix)):
                raise ValueError(f"prefix {prefix!r} of {host}: an ECR repository prefix is 2-30 lowercase characters")
        return upstreams

    @field_validator("exclude_images")
    @classmethod
    def _check_exclude_images(cls, value: list[str]) -> list[str]:
        # Globs match the normalised name, where every Docker Hub host is `docker.io`: a glob written
        # against another Hub host name would silently match nothing (or change meaning), so refuse it.
        for glob in value:
            host, _, path = glob.partition("/")
            if host.lower() in DOCKER_HUB_ALIASES and host != DOCKER_HUB:
                official = "" if "/" in path else "library/"
                raise ValueError(
                    f"{glob!r} names the Docker Hub host {host!r}: globs match the normalised name, "
                    f"write it as {f'{DOCKER_HUB}/{official}{path}'!r}"
                )
        return value

    _check_secret_name = field_validator("secret_name")(_secret_name)

    @field_validator("opt_out_label")
    @classmethod
    def _check_label(cls, value: str) -> str:
        if not LABEL_KEY.match(value):
            raise ValueError("not a valid label key, e.g. ecr-pullthrough/skip")
        return value

    @model_validator(mode="after")
    def _resolve_registry(self) -> CommonSettings:
        if self.registry is not None and (self.account_id is not None or self.region is not None):
            raise ValueError("registry: give either --registry or --account-id with --region, not both")
        if self.registry is None:
            if self.account_id is None or self.region is None:
                raise ValueError("registry: set --registry, or --account-id and --region")
            if not AWS_ACCOUNT_ID.match(self.account_id):
                raise ValueError("account_id: an AWS account id is 12 digits")
            if not AWS_REGION.match(self.region):
                raise ValueError("region: not an AWS region name, e.g. us-east-1")
            suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
            self.registry = f"{self.account_id}.dkr.ecr.{self.region}.{suffix}"
            return self
        self.registry = self.registry.strip().lower()
        match = ECR_HOST.match(self.registry)
        if match is None:
            raise ValueError(
                "registry: not a private ECR registry host, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com"
            )
        self.account_id, self.region = match["account"], match["region"]
        return self

    @property
    def registry_host(self) -> str:
        assert self.registry is not None  # resolved by _resolve_registry
        return self.registry

    def rewrite_rules(self) -> RewriteRules:
        return RewriteRules(
            registry=self.registry_host,
            docker_hub_prefix=self.prefix,
            upstreams=dict(self.upstreams),
            digest_policy=self.digest_policy,
            exclude_images=tuple(self.exclude_images),
        )


class WebhookSettings(CommonSettings):
    """`ecr-pullthrough webhook`: the admission webhook server."""

    tls_cert: Path = Field(description="PEM serving certificate (re-read when it changes)")
    tls_key: Path = Field(description="PEM private key of the serving certificate")
    host: str = Field(
        "127.0.0.1",
        description="address to listen on; `::` is every IPv6 and IPv4 address (IPv4 only where the node "
        "has no IPv6); the chart sets `::`",
    )
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port")
    upstream_status_file: Path | None = Field(
        None, description="the controller's upstream status document (the chart mounts its ConfigMap here)"
    )
    require_verified_upstreams: bool = Field(
        True,
        description="rewrite an upstream's images only while the controller has verified it; "
        "false rewrites blindly (see the README for the trade-off)",
    )
    upstream_status_max_age_seconds: float = Field(
        7200, gt=0, description="an upstream status older than this counts as unknown: nothing is rewritten"
    )
    max_body_bytes: int = Field(
        3 * 1024 * 1024,
        ge=1024,
        description="largest AdmissionReview accepted (a pod is at most ~1.5 MB in etcd; a review carries two)",
    )
    max_in_flight: int = Field(
        128,
        ge=1,
        description="admissions in flight before more get a fast 503 (about 0.2 s of queue on one core; "
        "the API server's failurePolicy Ignore admits a shed pod unrewritten)",
    )
    request_read_timeout_seconds: float = Field(
        10,
        gt=0,
        description="a request's headers and body must arrive within this from its first byte, "
        "or the connection is cut (slowloris)",
    )
    response_write_timeout_seconds: float = Field(
        10, gt=0, description="a client that does not read its answer for this long is cut off"
    )

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _check_readable(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_status_file(self) -> WebhookSettings:
        if self.require_verified_upstreams and self.upstream_status_file is None:
            raise ValueError(
                "upstream_status_file: required while --require-verified-upstreams is true "
                "(the file may not exist yet: until it does, nothing is rewritten)"
            )
        return self


class RewriteCommandSettings(CommonSettings):
    """`ecr-pullthrough rewrite [settings] [--stdin] [--output text|json] [--] IMAGE...`: what the webhook
    would do with each image.

    Images are taken verbatim from the command line (never from the environment); after `--` nothing is an
    option. `--stdin` reads more, one per line, or NUL-separated if the input holds a NUL. Every input gets
    exactly one line: `--output text` (default) prints the input and the result as JSON strings, the reason,
    and the detail as a JSON string, separated by tabs; `--output json` prints one JSON object per line.
    The exit status is 1 if any image is not a valid reference.
    """


class InstallationSettings(CommonSettings):
    """What the operator tools (`scan`, `doctor`) read of an installation: where it is, and its status."""

    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default: $KUBECONFIG or ~/.kube/config, else in-cluster"
    )
    namespace: str = Field("ecr-pullthrough", description="the release namespace (its upstream status ConfigMap)")
    release: str = Field(
        "",
        description="read the settings of this installed Helm release (in --namespace): its settings ConfigMap "
        "and its Deployments' flags; your own flags and environment still win",
    )
    upstream_status_configmap: str = Field(
        "ecr-pullthrough-upstream-status",
        description="the controller's upstream status ConfigMap (in --namespace); scan without one shows every "
        "upstream as verified",
    )
    upstream_status_max_age_seconds: float = Field(
        7200, gt=0, description="an upstream status older than this counts as unknown, as for the webhook"
    )


class ScanSettings(InstallationSettings):
    """`ecr-pullthrough scan`: what the webhook would do to every workload of the cluster, read-only."""

    output: Literal["text", "json"] = Field("text", description="a table per namespace, or JSON for scripts")


class RemovePullSecretsSettings(BaseSettings):
    """`ecr-pullthrough remove-pull-secrets`: after a switch to `--pull-secret-mode node-role`, remove this
    installation's pull Secrets from every namespace (lists them unless --delete)."""

    model_config = SettingsConfigDict(**{**CommonSettings.model_config, "cli_implicit_flags": True})

    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default: $KUBECONFIG or ~/.kube/config, else in-cluster"
    )
    secret_name: str = Field("ecr-pullthrough", description="the pull Secret's name (the chart's secretName)")
    instance: str = Field(
        description="the installation whose Secrets to remove: the label ecr-pullthrough/instance, "
        "<release namespace>.<release name> for the chart"
    )
    delete: bool = Field(False, description="delete them; without it, only list what would be deleted")

    _check_secret_name = field_validator("secret_name")(_secret_name)

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str) -> str:
        if not LABEL_VALUE.match(value):
            raise ValueError("a label value: at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends")
        return value


DOCTOR_CHECKS = ("controller", "aws", "pull-secrets", "webhook-configuration", "webhook", "upstream-status")


class DoctorSettings(InstallationSettings):
    """`ecr-pullthrough doctor`: a checklist of what works and what to fix, each line pass, warn or fail.

    The names default to a release named ecr-pullthrough (the chart's names for another release:
    `<release>-ecr-pullthrough-...`). The exit status is 1 when any check fails.
    """

    check: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DOCTOR_CHECKS),
        description="the checks to run, comma-separated: " + ",".join(DOCTOR_CHECKS),
    )
    require_verified_upstreams: bool = Field(
        True, description="as the webhook is set: false means it rewrites without the controller's verification"
    )
    webhook_configuration: str = Field("ecr-pullthrough", description="the MutatingWebhookConfiguration")
    webhook_tls_secret: str = Field(
        "ecr-pullthrough-webhook-tls",
        description="the Secret (in --namespace) holding the webhook's serving certificate",
    )
    instance: str = Field(
        "",
        description="the installation's ecr-pullthrough/instance label (default: the label of the pull Secret "
        "in --namespace, which only the controller may write)",
    )
    exclude_namespace_selector: str = Field(
        "", description="as the controller is set: label selector of namespaces that get no pull secret"
    )
    dry_run_namespace: str = Field(
        "default", description="where the dry-run pod is created: a namespace the webhook does not exclude"
    )
    dry_run_image: str = Field("hello-world:latest", description="the Docker Hub image of the dry-run pod")
    controller_url: str = Field(
        "",
        description="the controller's http address for its /metrics (e.g. through `kubectl port-forward`); "
        "without it the controller's view comes from its status ConfigMap, Secret and Events only",
    )
    output: Literal["text", "json"] = Field("text", description="a checklist, or JSON for scripts")

    _split_checks = field_validator("check", mode="before")(_split_list)

    @field_validator("check")
    @classmethod
    def _check_checks(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DOCTOR_CHECKS))
        if unknown:
            raise ValueError(f"unknown check {', '.join(unknown)}: choose from {', '.join(DOCTOR_CHECKS)}")
        return value

    @field_validator("exclude_namespace_selector")
    @classmethod
    def _check_selector(cls, value: str) -> str:
        parse_selector(value)
        return value


class ControllerSettings(CommonSettings):
    """`ecr-pullthrough controller`: keeps a fresh ECR pull secret in every namespace."""

    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default: in-cluster service account, else $KUBECONFIG or ~/.kube/config"
    )
    namespace: str = Field("ecr-pullthrough", description="the controller's own namespace (its Lease and Events)")
    exclude_namespace_selector: str = Field(
        "",
        description="label selector of namespaces that get no secret, e.g. team=legacy,env!=prod "
        "(namespaces with the opt-out label are always excluded)",
    )
    lease_name: str = Field("ecr-pullthrough-controller", description="Lease used for leader election")
    instance: str = Field(
        "",
        description="this installation's name in the label ecr-pullthrough/instance of its pull Secrets, so two "
        "installations never write each other's (default: --namespace; the chart sets <namespace>.<release>)",
    )
    identity: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        description="this replica's leader-election identity (default: hostname plus a random suffix)",
    )
    lease_seconds: float = Field(15, gt=0, description="how long a leader's lease lasts without renewal")
    renew_deadline_seconds: float = Field(10, gt=0, description="a leader that cannot renew this long steps down")
    retry_seconds: float = Field(2, gt=0, description="how often to try to acquire or renew the lease")
    resync_seconds: float = Field(600, gt=0, description="full resync of every namespace (writes only differences)")
    token_refresh_floor_seconds: float = Field(
        60, gt=0, description="never fetch a new token sooner than this after the last (guards a past expiresAt)"
    )
    aws_connect_timeout: float = Field(3, gt=0, description="seconds to connect to ECR")
    aws_read_timeout: float = Field(5, gt=0, description="seconds to wait for an ECR answer")
    aws_max_attempts: int = Field(3, ge=1, description="attempts per ECR call (boto3 standard retry mode)")
    allow_instance_metadata: bool = Field(
        False,
        description="let boto3 fall back to the node's instance role through IMDS when IRSA or Pod Identity "
        "gives no credentials (off: a mis-bound role fails loudly instead of spreading the node role's token)",
    )
    node_role_credentials: Literal["instance-metadata", "mirrored-role"] = Field(
        "instance-metadata",
        description="--pull-secret-mode node-role only: verify as the node role itself, from the instance "
        "metadata service (no IRSA or Pod Identity may be bound), or as a role of ours that mirrors the node "
        "role's ECR permissions (IRSA or Pod Identity; see the README for what that does not prove)",
    )
    workers: int = Field(4, ge=1, le=64, description="namespaces reconciled in parallel")
    api_qps: float = Field(20, gt=0, description="client-side limit on Kubernetes API writes per second")
    api_burst: int = Field(40, ge=1, description="burst above --api-qps")
    webhook_tls_secret: str = Field(
        "", description="self-contained certificates: the Secret (in --namespace) holding the webhook's CA and cert"
    )
    webhook_configuration: str = Field(
        "", description="the MutatingWebhookConfiguration whose caBundle to keep in step"
    )
    webhook_service: str = Field("", description="the webhook's Service (in --namespace), named in the certificate")
    certificate_check_seconds: float = Field(3600, gt=0, description="how often to check the webhook certificate")
    upstream_status_configmap: str = Field(
        "", description="verify every upstream and publish the result in this ConfigMap (in --namespace)"
    )
    verify_seconds: float = Field(
        1800, gt=0, description="how often to verify the upstreams (sooner, with backoff, while one fails)"
    )
    registry_api_url: str = Field(
        "",
        description="the registry API the upstream probes go to (default https://<registry>; "
        "for a proxy in front of ECR, or a test stand-in)",
    )
    probe_images: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="upstream host -> repository:tag pulled (manifest only) through the cache to verify it, "
        "e.g. ghcr.io=org/small-image:1",
    )
    pull_guard: bool = Field(
        True,
        description="watch the kubelets' pull Events and mark an upstream degraded (not rewritten) while "
        "pulls through the cache fail (needs --upstream-status-configmap)",
    )
    pull_guard_window_seconds: float = Field(600, gt=0, description="the pull-outcome guard's sliding window")
    pull_guard_min_failures: int = Field(5, ge=1, description="failed pulls within the window before degrading")
    pull_guard_min_images: int = Field(
        2, ge=1, description="distinct failing images within the window before degrading (one bad image is not enough)"
    )
    pull_guard_min_pods: int = Field(3, ge=1, description="distinct pods with a failed pull within the window")
    pull_guard_failure_ratio: float = Field(
        0.5, gt=0, le=1, description="failed share of the window's pulls through the cache before degrading"
    )
    pull_guard_quiet_seconds: float = Field(
        300, gt=0, description="a degraded upstream recovers after this long without a failed pull"
    )
    pull_guard_trial_one_in: int = Field(
        10, ge=0, description="while degraded, still rewrite one pod in this many, so recovery can show (0: none)"
    )
    http_host: str = Field(
        "127.0.0.1",
        description="address of /healthz, /readyz, /metrics; `::` as for the webhook's --host (the chart sets it)",
    )
    http_port: int = Field(8080, ge=0, le=65535, description="port of /healthz, /readyz, /metrics (0: any free port)")

    def pull_guard_thresholds(self) -> Thresholds:
        return Thresholds(
            window_seconds=self.pull_guard_window_seconds,
            min_failures=self.pull_guard_min_failures,
            min_images=self.pull_guard_min_images,
            min_pods=self.pull_guard_min_pods,
            failure_ratio=self.pull_guard_failure_ratio,
            quiet_seconds=self.pull_guard_quiet_seconds,
            trial_one_in=self.pull_guard_trial_one_in,
        )

    _split_probe_images = field_validator("probe_images", mode="before")(_split_map)

    @field_validator("exclude_namespace_selector")
    @classmethod
    def _check_selector(cls, value: str) -> str:
        parse_selector(value)
        return value

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str) -> str:
        if value and not LABEL_VALUE.match(value):
            raise ValueError("a label value: at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends")
        return value

    @model_validator(mode="after")
    def _default_instance(self) -> ControllerSettings:
        self.instance = self.instance or self.namespace
        return self

    @model_validator(mode="after")
    def _check_certificate_settings(self) -> ControllerSettings:
        given = [bool(self.webhook_tls_secret), bool(self.webhook_configuration), bool(self.webhook_service)]
        if any(given) and not all(given):
            raise ValueError(
                "webhook_tls_secret: self-contained certificates need --webhook-tls-secret, "
                "--webhook-configuration and --webhook-service together"
            )
        return self

    @model_validator(mode="after")
    def _check_lease_timing(self) -> ControllerSettings:
        if not self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("renew_deadline_seconds: need retry_seconds < renew_deadline_seconds < lease_seconds")
        return self
