"""Running the real `ecr-pullthrough controller` against the test control plane, as the chart's ServiceAccount."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from urllib3.exceptions import HTTPError

from tests.e2e.controlplane import ControlPlane
from tests.fake_ecr import FakeEcr
from tests.support import free_port, stop_process, wait_for


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a bearer token only (no admin certificate)."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": plane.url, "certificate-authority": str(plane.ca_path)}}],
        "users": [{"name": "controller", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "controller"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(document))
    return path


@dataclass
class ControllerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    identity: str
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample from /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        return stop_process(self.process, sig)


@contextmanager
def controller_process(
    kubeconfig: Path, ecr: FakeEcr, folder: Path, identity: str, *args: str, aws: dict[str, str] | None = None
) -> Iterator[ControllerProcess]:
    """Run the controller until the block ends; wait until its health endpoint answers.

    Its AWS environment is `aws`, else the fake ECR's (credentials and endpoints).
    """
    port = free_port()
    log_path = folder / f"controller-{identity}.log"
    command = [sys.executable, "-m", "webhook", "controller", "--kubeconfig", str(kubeconfig)]
    command += ["--identity", identity, "--http-port", str(port), *args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_"))}
    environment.update(ecr.environment() if aws is None else aws)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    running = ControllerProcess(process, port, log_path, identity)
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"controller exited with {process.returncode}:\n{running.log()}")
            return running.get("/healthz")[0] == 200

        wait_for(healthy, timeout=30, what=f"controller {identity} to serve /healthz")
        yield running
    finally:
        running.stop()


@contextmanager
def status_file_sync(plane: ControlPlane, path: Path, namespace: str, configmap: str) -> Iterator[None]:
    """Keep `path` equal to the controller's status ConfigMap, as the kubelet keeps a mounted ConfigMap."""
    stop = threading.Event()

    def sync() -> None:
        with plane.api_client() as api:
            core = client.CoreV1Api(api)
            while not stop.is_set():
                try:
                    data = core.read_namespaced_config_map(configmap, namespace, _request_timeout=5).data or {}
                except (ApiException, HTTPError, OSError):  # the API server may stop first
                    data = {}
                text = data.get("status.json")
                if text is not None and (not path.exists() or path.read_text() != text):
                    path.with_suffix(".new").write_text(text)
                    os.replace(path.with_suffix(".new"), path)
                stop.wait(0.5)

    thread = threading.Thread(target=sync, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
