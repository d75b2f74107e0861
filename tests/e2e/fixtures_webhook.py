"""What the webhook end-to-end tests stand on: the real webhook registered with the API server, and its neighbours.

The API server is shared by the whole session, so every webhook configuration
registered here is restricted to namespaces carrying a label value of its own
(`restricted_to`) and deleted when its fixture ends; namespaces get unique names.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.controlplane import ControlPlane
from tests.e2e.webhookconfig import mutating_webhook_configuration
from tests.strategies import REGISTRY
from tests.support import WebhookProcess, serving_pair, wait_for, webhook_process
from webhook.certs import make_ca

# Namespace label that says which of the tests' webhook configurations acts on a namespace.
TARGET_LABEL = "e2e.ecr-pullthrough.io/webhook"
# The API server picks up a new configuration within about a second; a loaded CI runner is slower.
ACTIVE_TIMEOUT = 30.0
PROBE_IMAGE = "nginx:1.27"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def restricted_to(configuration: Mapping[str, Any], label: str, value: str) -> dict[str, Any]:
    """A copy of `configuration` whose webhooks also require the namespace label `label=value`."""
    restricted = copy.deepcopy(dict(configuration))
    for webhook in restricted["webhooks"]:
        selector = webhook.setdefault("namespaceSelector", {})
        selector.setdefault("matchExpressions", []).append({"key": label, "operator": "In", "values": [value]})
    return restricted


@contextmanager
def registered(control_plane: ControlPlane, configuration: Mapping[str, Any]) -> Iterator[None]:
    """Register a MutatingWebhookConfiguration until the block ends."""
    name = configuration["metadata"]["name"]
    with control_plane.api_client() as api:
        client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(dict(configuration))
    try:
        yield
    finally:
        with control_plane.api_client() as api:
            try:
                client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(name)
            except ApiException as error:
                if error.status != 404:
                    raise


def new_namespace(control_plane: ControlPlane, prefix: str, labels: Mapping[str, str] | None = None) -> str:
    """A namespace with a unique name (and its default ServiceAccount); never deleted (nothing would finish it)."""
    name = unique(prefix)
    control_plane.create_namespace(name, labels=dict(labels or {}))
    return name


# -- pods as plain dicts ---------------------------------------------------


def pod(
    name: str,
    containers: Mapping[str, str],
    init_containers: Mapping[str, str] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod manifest; containers are given as {name: image}."""
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = dict(labels)
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {"containers": [{"name": n, "image": i} for n, i in containers.items()], **spec}
    if init_containers:
        body["initContainers"] = [{"name": n, "image": i} for n, i in init_containers.items()]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def as_dict(api: client.ApiClient, model: Any) -> dict[str, Any]:
    """A client model as the API's own JSON (camelCase keys, no nulls)."""
    result: dict[str, Any] = api.sanitize_for_serialization(model)
    return result


def create_pod(
    api: client.ApiClient, namespace: str, body: Mapping[str, Any], *, dry_run: bool = False
) -> dict[str, Any]:
    """Create `body` and return the pod as stored (or as it would be stored, on a dry run)."""
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod(namespace, dict(body), **({"dry_run": "All"} if dry_run else {}))
    return as_dict(api, created)


def read_pod(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return as_dict(api, client.CoreV1Api(api).read_namespaced_pod(name, namespace))


def images(stored: Mapping[str, Any], field: str = "containers") -> dict[str, str]:
    return {c["name"]: c["image"] for c in stored["spec"].get(field) or []}


def annotations(stored: Mapping[str, Any]) -> dict[str, str]:
    return dict(stored["metadata"].get("annotations") or {})


def pull_secrets(stored: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(stored["spec"].get("imagePullSecrets") or [])


def wait_until_admitted(
    control_plane: ControlPlane, namespace: str, admitted: Callable[[dict[str, Any]], bool], what: str
) -> None:
    """Dry-run a Docker Hub pod in `namespace` until `admitted(pod as it would be stored)` holds."""
    probes = itertools.count()
    with control_plane.api_client() as api:

        def check() -> bool:
            return admitted(create_pod(api, namespace, pod(f"probe-{next(probes)}", {"c": PROBE_IMAGE}), dry_run=True))

        wait_for(check, timeout=ACTIVE_TIMEOUT, interval=0.1, what=what)


def admissions(webhook: WebhookProcess, namespace: str, name: str) -> list[dict[str, Any]]:
    """The webhook's `admission` log lines for one pod, oldest first."""
    lines = []
    for line in webhook.log().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "admission" and (entry.get("namespace"), entry.get("pod")) == (namespace, name):
            lines.append(entry)
    return lines


# -- the webhook under test, registered as the chart would ---------------------


@dataclass
class RegisteredWebhook:
    """A webhook process and the configuration that sends the API server's pod admissions to it."""

    control_plane: ControlPlane
    process: WebhookProcess
    configuration: dict[str, Any]
    target: str  # value of TARGET_LABEL that its configuration requires
    release_namespace: str

    def namespace(self, prefix: str, labels: Mapping[str, str] | None = None) -> str:
        """A new namespace this webhook acts on (unless `labels` opt it out)."""
        return new_namespace(self.control_plane, prefix, {TARGET_LABEL: self.target, **(labels or {})})

    def admissions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return admissions(self.process, namespace, name)


@contextmanager
def registered_webhook(
    control_plane: ControlPlane,
    folder: Path,
    *args: str,
    target: str,
    timeout_seconds: int = 5,
    exclude_namespace_selector: str = "",
) -> Iterator[RegisteredWebhook]:
    """Run `ecr-pullthrough webhook --registry REGISTRY *args`, register it, and wait until the API server calls it."""
    release_namespace = unique("ecr-pullthrough")
    with webhook_process(folder, "--registry", REGISTRY, *args) as process:
        configuration = restricted_to(
            mutating_webhook_configuration(
                url=f"{process.url}/mutate",
                ca_pem=process.ca.cert_pem,
                name=unique(f"ecr-pullthrough-{target}"),
                timeout_seconds=timeout_seconds,
                release_namespace=release_namespace,
                exclude_namespace_selector=exclude_namespace_selector,
            ),
            TARGET_LABEL,
            target,
        )
        with registered(control_plane, configuration):
            webhook = RegisteredWebhook(control_plane, process, configuration, target, release_namespace)
            probe_namespace = webhook.namespace("probe")
            wait_until_admitted(
                control_plane,
                probe_namespace,
                lambda probe: bool(webhook.admissions(probe_namespace, probe["metadata"]["name"])),
                what=f"the API server to call webhook configuration {configuration['metadata']['name']}",
            )
            yield webhook


@pytest.fixture(scope="module")
def enforcing(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegisteredWebhook]:
    """The webhook in its default (enforce) mode, registered with the chart's configuration."""
    with registered_webhook(control_plane, tmp_path_factory.mktemp("enforcing"), target="enforce") as webhook:
        yield webhook


@pytest.fixture
def auditing(control_plane: ControlPlane, tmp_path: Path) -> Iterator[RegisteredWebhook]:
    """A second webhook process in audit mode, acting only on namespaces labelled for it."""
    with registered_webhook(control_plane, tmp_path, "--mode", "audit", target=unique("audit")) as webhook:
        yield webhook


# -- neighbours: another mutating webhook, and a listener that never answers -------


@dataclass
class SidecarInjector:
    """A second mutating webhook, as a service mesh's injector is: it adds a sidecar container."""

    url: str
    ca_pem: bytes
    calls: list[dict[str, Any]]

    def configuration(self, name: str) -> dict[str, Any]:
        """Pod creations only, and no reinvocation: as most injectors register themselves."""
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "sidecars.injector.example.com",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"url": self.url, "caBundle": base64.b64encode(self.ca_pem).decode()},
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                            "scope": "Namespaced",
                        }
                    ],
                }
            ],
        }


class _InjectorHandler(BaseHTTPRequestHandler):
    server: _InjectorServer

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["request"]
        self.server.calls.append(request)
        sidecar = self.server.sidecar
        containers = request["object"]["spec"].get("containers") or []
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if all(c.get("name") != sidecar["name"] for c in containers):
            patch = [{"op": "add", "path": "/spec/containers/-", "value": sidecar}]
            response |= {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _InjectorServer(ThreadingHTTPServer):
    # Handler threads are joined by server_close(): nothing outlives the fixture.
    daemon_threads = False

    def __init__(self, context: ssl.SSLContext, sidecar: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _InjectorHandler)
        self.context = context
        self.sidecar = sidecar
        self.calls: list[dict[str, Any]] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        # The TLS handshake happens in the handler thread, not in the accept loop.
        connection, address = self.socket.accept()
        return self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address


@contextmanager
def sidecar_injector(folder: Path, sidecar: dict[str, Any]) -> Iterator[SidecarInjector]:
    ca, cert, key = serving_pair(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _InjectorServer(context, sidecar)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sidecar-injector")
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield SidecarInjector(f"https://{host!s}:{port}/mutate", ca.cert_pem, server.calls)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@dataclass
class SilentListener:
    """Accepts TCP connections and holds them open without ever answering (a hung webhook)."""

    url: str
    ca_pem: bytes
    accepted: list[socket.socket]


@contextmanager
def silent_listener() -> Iterator[SilentListener]:
    listener = socket.create_server(("127.0.0.1", 0))
    # Bounded accept(), so the thread sees `stop` without anyone having to connect.
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=hold, name="silent-listener")
    thread.start()
    try:
        port = listener.getsockname()[1]
        # Never presented: no TLS handshake ever completes. It only has to be a valid caBundle.
        yield SilentListener(f"https://127.0.0.1:{port}/mutate", make_ca("unused").cert_pem, accepted)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
