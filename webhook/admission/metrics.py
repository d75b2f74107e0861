"""Prometheus metrics of the webhook. Labels are bounded: no image, pod or namespace names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.admissions = Counter(
            "ecr_pullthrough_admissions",
            "Admission requests by outcome: patched, unchanged, skipped (opt-out, mirror pod, excluded namespace), "
            "ignored (not a pod), error (allowed unchanged after an internal error), bad_request, "
            "shed (503 before reading the body: too many admissions in flight).",
            ["outcome"],
            registry=self.registry,
        )
        self.images = Counter(
            "ecr_pullthrough_image_decisions",
            "Container images by decision reason (rewritten, other-registry, digest-pinned, ...) and mode.",
            ["reason", "mode"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ecr_pullthrough_admission_duration_seconds",
            "Time to decide and answer one admission request, without the transport.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "ecr_pullthrough_tls_reloads",
            "Serving certificate reloads after the files changed, by result (ok, error).",
            ["result"],
            registry=self.registry,
        )
        self.connections_cut = Counter(
            "ecr_pullthrough_connections_cut",
            "Connections aborted by reason: read-timeout (a request not fully sent in time, slowloris), "
            "write-timeout (a client that does not read its answer).",
            ["reason"],
            registry=self.registry,
        )
