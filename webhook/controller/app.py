"""`ecr-pullthrough controller`: wire settings, Kubernetes, ECR, leader election and health together."""

from __future__ import annotations

import datetime
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook import logs
from webhook.controller.ecr import TokenSource, aws_session, credentials_besides_the_node, ecr_client, sts_client
from webhook.controller.health import serve_health
from webhook.controller.heartbeat import Heartbeats
from webhook.controller.identity import CallerIdentity
from webhook.controller.kube import Backoff, RateLimiter, api_client
from webhook.controller.leader import LeaseElector
from webhook.controller.metrics import ControllerMetrics
from webhook.controller.monitor import UpstreamMonitor
from webhook.controller.pullguard import PullGuard
from webhook.controller.secrets import Controller, SecretTarget
from webhook.controller.upstreams import Verifier, configured_upstreams
from webhook.controller.webhookcerts import WebhookCertificates
from webhook.core.selectors import parse_selector
from webhook.listen import bound_address
from webhook.settings import ENV_PREFIX, ControllerSettings

log = logging.getLogger("ecr_pullthrough.controller")


def run(settings: ControllerSettings) -> int:
    logs.configure(settings.log_level)
    assert settings.region is not None  # resolved with the registry
    node_role = settings.pull_secret_mode == "node-role"
    as_the_node = node_role and settings.node_role_credentials == "instance-metadata"
    if as_the_node and (others := credentials_besides_the_node(os.environ)):
        # The verification must prove what the nodes' kubelets will do, so it runs as the node role alone;
        # a role bound to this pod would be ignored, and whoever bound it would believe it was verified.
        print(
            f"ecr-pullthrough controller: invalid setting --node-role-credentials "
            f"({ENV_PREFIX}NODE_ROLE_CREDENTIALS): instance-metadata verifies as the node role, but this pod "
            f"also has {', '.join(others)}: remove that binding, or set mirrored-role",
            file=sys.stderr,
        )
        return 2
    api = api_client(settings.kubeconfig)
    metrics = ControllerMetrics()
    by_labels = parse_selector(settings.exclude_namespace_selector)
    opted_out = parse_selector(f"{settings.opt_out_label}=true")
    target = SecretTarget(
        name=settings.secret_name,
        registry=settings.registry_host,
        excluded_names=frozenset(settings.exclude_namespaces),
        excluded_by_labels=lambda labels: opted_out(labels) or by_labels(labels),
        home_namespace=settings.namespace,
        instance=settings.instance,
    )
    session = aws_session(allow_instance_metadata=settings.allow_instance_metadata, instance_metadata_only=as_the_node)
    ecr = ecr_client(
        settings.region,
        session=session,
        connect_timeout=settings.aws_connect_timeout,
        read_timeout=settings.aws_read_timeout,
        max_attempts=settings.aws_max_attempts,
    )
    tokens = TokenSource(ecr)
    verify_now = threading.Event()
    heartbeats = Heartbeats()
    controller = Controller(
        api,
        tokens,
        target,
        metrics=metrics,
        is_leader=lambda: elector.leading(),
        heartbeats=heartbeats,
        workers=settings.workers,
        resync_seconds=settings.resync_seconds,
        token_refresh_floor=datetime.timedelta(seconds=settings.token_refresh_floor_seconds),
        writes=RateLimiter(settings.api_qps, settings.api_burst),
        on_token=verify_now.set,
        distribute=not node_role,
        on_placed=verify_now.set,
    )
    certificates_due = threading.Event()
    on_step_down: list[Callable[[], None]] = [controller.leading_stopped]

    def leading_started() -> None:
        controller.leading_started()
        certificates_due.set()
        verify_now.set()

    def leading_stopped() -> None:
        for forget in on_step_down:
            forget()

    elector = LeaseElector(
        api,
        namespace=settings.namespace,
        name=settings.lease_name,
        identity=settings.identity,
        lease_seconds=settings.lease_seconds,
        renew_deadline_seconds=settings.renew_deadline_seconds,
        retry_seconds=settings.retry_seconds,
        on_started=leading_started,
        on_stopped=leading_stopped,
        beat=lambda: heartbeats.beat("leader-election"),
    )
    if settings.webhook_tls_secret:
        certificates = WebhookCertificates(
            api,
            namespace=settings.namespace,
            secret=settings.webhook_tls_secret,
            configuration=settings.webhook_configuration,
            service=settings.webhook_service,
            instance=settings.instance,
        )
        keep = functools.partial(
            _keep_certificates, certificates, elector.leading, controller.stop, certificates_due, settings, heartbeats
        )
        threading.Thread(
            target=heartbeats.guarded("certificates", keep, controller.stop), name="certificates", daemon=True
        ).start()
        for watch in certificates.watches(certificates_due, controller.stop, heartbeats):
            threading.Thread(
                target=heartbeats.guarded(watch.name, watch.run, controller.stop), name=watch.name, daemon=True
            ).start()
    # Readiness is the process's own health (its caches); what is wrong on the AWS side is listed in
    # /readyz's body, Events, metrics and the status document, never in its status code.
    problems: list[Callable[[], list[str]]] = [controller.problems]
    if settings.upstream_status_configmap:
        assert settings.account_id is not None  # resolved with the registry
        verifier = Verifier(
            ecr,
            configured_upstreams(settings.prefix, settings.upstreams, settings.probe_images),
            controller.current_token,
            registry=settings.registry_host,
            registry_id=settings.account_id,
            registry_url=settings.registry_api_url,
            http_timeout=settings.aws_read_timeout * 2,
            pull_secret_mode=settings.pull_secret_mode,
            principal=_principal(settings),
        )
        guard = None
        if settings.pull_guard:
            guard = PullGuard(
                client.CoreV1Api(api),
                target=settings.rewrite_rules().status_target(),
                thresholds=settings.pull_guard_thresholds(),
                registry=metrics.registry,
                stop=controller.stop,
                heartbeats=heartbeats,
                changed=verify_now.set,
            )
            for name, loop in (("watch-events", guard.watch.run), ("pull-guard", guard.run)):
                threading.Thread(target=heartbeats.guarded(name, loop, controller.stop), name=name, daemon=True).start()
        monitor = UpstreamMonitor(
            api,
            verifier,
            namespace=settings.namespace,
            configmap=settings.upstream_status_configmap,
            interval=settings.verify_seconds,
            registry=metrics.registry,
            due=verify_now,
            heartbeats=heartbeats,
            token_problem=lambda: controller.token_error,
            waiting=controller.placing,
            degradations=guard.degradations if guard else lambda _now: {},
            trial_one_in=settings.pull_guard_trial_one_in,
        )
        problems.append(monitor.problems)
        on_step_down.append(monitor.leading_stopped)
        watch_upstreams = functools.partial(monitor.run, elector.leading, controller.stop)
        threading.Thread(
            target=heartbeats.guarded("upstreams", watch_upstreams, controller.stop), name="upstreams", daemon=True
        ).start()

    def details() -> dict[str, object]:
        found = [problem for source in problems for problem in source()]
        return {**identity.describe(), **({"problems": found} if found else {})}

    identity = CallerIdentity(
        sts_client(
            settings.region,
            session=session,
            connect_timeout=settings.aws_connect_timeout,
            read_timeout=settings.aws_read_timeout,
            max_attempts=settings.aws_max_attempts,
        ),
        on_error=lambda error: metrics.aws_errors.labels("GetCallerIdentity", error.metric_code).inc(),
    )

    def not_alive_reason() -> str | None:
        overdue = heartbeats.overdue()
        return f"loops not running: {', '.join(overdue)}" if overdue else None

    health = serve_health(
        settings.http_host,
        settings.http_port,
        metrics.registry,
        controller.not_ready_reason,
        details=details,
        not_alive_reason=not_alive_reason,
    )
    log.info(
        "controller starting",
        extra={
            "fields": {
                "registry": settings.registry_host,
                "region": settings.region,
                "pullSecretMode": settings.pull_secret_mode,
                **({"secret": settings.secret_name} if not node_role else {}),
                **({"nodeRoleCredentials": settings.node_role_credentials} if node_role else {}),
                "identity": settings.identity,
                "instanceMetadata": "only"
                if as_the_node
                else "allowed"
                if settings.allow_instance_metadata
                else "disabled",
                "http": bound_address(health.socket),
            }
        },
    )
    threading.Thread(target=identity.run, args=(controller.stop,), name="identity", daemon=True).start()

    def stop(signum: int, _: FrameType | None) -> None:
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        controller.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    controller.start()
    elector.run(controller.stop)  # returns once stopped, after releasing the lease
    health.shutdown()
    log.info("controller stopped")
    return 0


def _principal(settings: ControllerSettings) -> str:
    """Whose permissions the verification's token carries, for the messages that say what to fix."""
    if settings.pull_secret_mode == "secret":
        return "the controller's IAM role"
    if settings.node_role_credentials == "instance-metadata":
        return "the node role"
    return "the controller's IAM role (which must mirror the node role's ECR permissions)"


def _keep_certificates(
    certificates: WebhookCertificates,
    is_leader: Callable[[], bool],
    stop: threading.Event,
    due: threading.Event,
    settings: ControllerSettings,
    heartbeats: Heartbeats,
) -> None:
    """While leading: check the webhook's certificate now and then, renew it before it expires."""
    backoff = Backoff(2, 300)
    while not stop.is_set():
        delay = settings.certificate_check_seconds
        if is_leader():
            try:
                certificates.ensure(is_leader)
                backoff.reset()
            except (ApiException, HTTPError, OSError) as error:
                delay = backoff.next()
                log.warning(
                    "webhook certificate check failed",
                    extra={"fields": {"error": str(error).splitlines()[0], "retryIn": round(delay, 1)}},
                )
        heartbeats.wait("certificates", due, delay)
        due.clear()
