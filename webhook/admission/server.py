"""The webhook's HTTP layer: transport only (body limit, content type, load shedding, JSON out).

Deciding is the handler's job; this module reads at most `max_body_bytes`,
hands the bytes over and writes the answer back. uvicorn runs on uvloop with
its httptools parser, under the connection deadlines of `connection.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhook import logs
from webhook.admission import review
from webhook.admission.connection import guarded_protocol
from webhook.admission.handler import AdmissionHandler
from webhook.admission.metrics import WebhookMetrics
from webhook.admission.shedding import shed_app
from webhook.admission.statusfile import StatusFile
from webhook.admission.tls import ReloadingContext
from webhook.core.mutate import PodPolicy
from webhook.listen import bound_address, listen
from webhook.settings import WebhookSettings

log = logging.getLogger("ecr_pullthrough.webhook")
# Typical reviews are 2-40 KB (kube-apiserver sends the pod, and for UPDATE the old pod too); a
# 64 KB body decodes in about a millisecond, the budget we allow on the event loop.
OFF_LOOP_BODY_BYTES = 64 * 1024


JSON = b"application/json"


class MutateEndpoint:
    """POST /mutate as a plain ASGI app, mounted in the FastAPI app.

    FastAPI's request machinery (the Request object, dependency solving, the Response
    classes) cost more per review than deciding the pod; here the body is read straight
    from `receive` and the answer sent as two messages.
    """

    def __init__(self, handler: AdmissionHandler, metrics: WebhookMetrics, max_body_bytes: int) -> None:
        self.handler = handler
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._bad_request = metrics.admissions.labels("bad_request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type, declared = b"", b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
        if content_type.split(b";")[0].strip().lower() != JSON:
            self._bad_request.inc()
            shown = content_type.decode("latin-1")
            await _answer(send, 415, {"error": f"content type must be application/json, not {shown!r}"})
            return
        body = await self._read_body(receive, declared)
        if body is None:
            self._bad_request.inc()
            log.warning("admission request too large", extra={"fields": {"limit": self.max_body_bytes}})
            # Close: the rest of an oversized body is not worth reading (or waiting for) to keep the connection.
            error = {"error": f"body larger than {self.max_body_bytes} bytes"}
            await _answer(send, 413, error, close=True)
            return
        # Deciding a pod is CPU-only and takes well under a millisecond: no thread hop. A body large
        # enough to take longer (its JSON decoding, thousands of containers) is decided on a worker
        # thread, so the event loop keeps answering the small reviews queued behind it.
        if len(body) > OFF_LOOP_BODY_BYTES:
            answer = await asyncio.to_thread(self.handler.handle, body)
        else:
            answer = self.handler.handle(body)
        await _answer(send, answer.status, answer.body)

    async def _read_body(self, receive: Receive, declared: bytes) -> bytes | None:
        """The whole body, or None past the limit (declared or sent)."""
        limit = self.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away; nobody to answer
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _answer(send: Send, status: int, document: dict[str, Any], *, close: bool = False) -> None:
    body = review.encode(document)
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def _freeze_heap(_: FastAPI) -> AsyncIterator[None]:
    """Once started, move every object alive (modules, the app, settings) out of the collector's sight.

    Full collections otherwise walk that long-lived heap again and again: 15-20 ms pauses at p99.
    """
    gc.collect()
    gc.freeze()
    # A review's decoded JSON is thousands of objects, all freed by reference counting (a tree has
    # no cycles); at the default threshold (700) each review triggered several young collections
    # that walked it for nothing. Cycles (exceptions, tasks) still get collected, just less often.
    gc.set_threshold(50_000, 20, 20)
    yield


def create_app(handler: AdmissionHandler, metrics: WebhookMetrics, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="ecr-pullthrough webhook",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_freeze_heap,
        # We export Prometheus metrics, not OpenTelemetry: without this FastAPI asks the global
        # tracer and meter providers on every request whether they are configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    app.router.routes.insert(0, Route("/mutate", MutateEndpoint(handler, metrics, max_body_bytes), methods=["POST"]))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def policy_from(settings: WebhookSettings) -> PodPolicy:
    return PodPolicy(
        rules=settings.rewrite_rules(),
        secret_name=settings.secret_name,
        opt_out_label=settings.opt_out_label,
        exclude_namespaces=frozenset(settings.exclude_namespaces),
        mode=settings.mode,
        pull_secret_mode=settings.pull_secret_mode,
    )


def serve(settings: WebhookSettings) -> None:
    """Run the webhook over TLS until SIGTERM or SIGINT."""
    logs.configure(settings.log_level)
    metrics = WebhookMetrics()
    tls = ReloadingContext(
        settings.tls_cert, settings.tls_key, lambda ok: metrics.tls_reloads.labels("ok" if ok else "error").inc()
    )
    status = None
    if settings.require_verified_upstreams and settings.upstream_status_file is not None:
        status = StatusFile(
            settings.upstream_status_file,
            datetime.timedelta(seconds=settings.upstream_status_max_age_seconds),
            settings.rewrite_rules().status_target(settings.pull_secret_mode),
        )
    handler = AdmissionHandler(policy_from(settings), metrics, status.current if status else None)
    app = create_app(handler, metrics, settings.max_body_bytes)
    sock = listen(settings.host, settings.port)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=guarded_protocol(
            settings.request_read_timeout_seconds,
            settings.response_write_timeout_seconds,
            lambda reason: metrics.connections_cut.labels(reason).inc(),
            settings.max_in_flight,
            shed_app(metrics.admissions.labels("shed").inc),
        ),
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=5,
        # uvicorn would build its TLS context once from file names; ours follows the files.
        ssl_context_factory=lambda _config, _default: tls.context,
    )
    log.info(
        "webhook starting",
        extra={
            "fields": {
                "listen": bound_address(sock),
                "registry": settings.registry_host,
                "prefix": settings.prefix,
                "upstreams": settings.upstreams,
                "mode": settings.mode,
                "digestPolicy": settings.digest_policy,
                "requireVerifiedUpstreams": settings.require_verified_upstreams,
            }
        },
    )
    # Server.run, not asyncio.run(serve()): only run() builds the loop `loop=` asks for.
    # The socket is ours (dual-stack for `::`); uvicorn serves on it with its TLS context.
    uvicorn.Server(config).run(sockets=[sock])
