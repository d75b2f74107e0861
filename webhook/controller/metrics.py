"""The controller's Prometheus metrics: tokens, namespaces in sync, writes, AWS errors, leadership."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.token_expiry = Gauge(
            "ecr_pullthrough_token_expiry_timestamp_seconds", "Expiry of the current ECR token.", registry=r
        )
        self.last_refresh = Gauge(
            "ecr_pullthrough_token_last_refresh_timestamp_seconds", "Last successful token fetch.", registry=r
        )
        self.namespaces = Gauge("ecr_pullthrough_namespaces", "Namespaces that should hold the secret.", registry=r)
        self.in_sync = Gauge(
            "ecr_pullthrough_namespaces_in_sync", "Namespaces whose secret holds the current token.", registry=r
        )
        self.writes = Counter(
            "ecr_pullthrough_secret_writes",
            "Secret writes by result: created, updated, conflict, error, foreign (not ours, left alone).",
            ["result"],
            registry=r,
        )
        self.write_failures = Counter(
            "ecr_pullthrough_secret_write_failures",
            "Failed Secret writes by reason (forbidden, invalid, not-found, throttled, server-error, unreachable, "
            "other); each namespace retries with its own backoff.",
            ["reason"],
            registry=r,
        )
        self.aws_errors = Counter(
            "ecr_pullthrough_aws_errors", "Failed ECR calls by error code.", ["operation", "code"], registry=r
        )
        self.leader = Gauge("ecr_pullthrough_leader", "1 while this replica leads, else 0.", registry=r)
        self.resyncs = Counter("ecr_pullthrough_resyncs", "Periodic full resyncs started.", registry=r)
        self.queue_depth = Gauge("ecr_pullthrough_queue_depth", "Namespaces waiting to be reconciled.", registry=r)
