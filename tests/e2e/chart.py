"""The Helm chart as the tests use it: rendered by the real helm, applied through the real API server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

CHART = Path(__file__).resolve().parents[2] / "chart"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def render(
    helm: Path,
    *,
    release: str = "ecr-pullthrough",
    namespace: str = "ecr-pullthrough",
    show_only: tuple[str, ...] = (),
    values: tuple[Path, ...] = (),
    set_values: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """`helm template` of our chart, as a list of objects."""
    command = [str(helm), "template", release, str(CHART), "--namespace", namespace]
    if not values:  # a values file names its own registry
        command += ["--set", f"registry={REGISTRY}"]
    for key, value in (set_values or {}).items():
        command += ["--set", f"{key}={value}"]
    for path in values:
        command += ["--values", str(path)]
    for template in show_only:
        command += ["--show-only", template]
    rendered = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def installed(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `helm install` creates: not the `helm test` hooks (test_helm_test.py), made only by `helm test`."""
    return [o for o in objects if "test" not in (o["metadata"].get("annotations") or {}).get("helm.sh/hook", "")]


def apply(api: client.ApiClient, objects: list[dict[str, Any]], namespace: str) -> None:
    """Create each object (or replace it if it exists), whatever its kind."""
    dynamic = DynamicClient(api)
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        target_namespace = obj["metadata"].get("namespace", namespace) if resource.namespaced else None
        try:
            resource.create(body=obj, namespace=target_namespace)
        except ConflictError:
            current = resource.get(name=obj["metadata"]["name"], namespace=target_namespace)
            obj["metadata"]["resourceVersion"] = current.metadata.resourceVersion
            resource.replace(body=obj, namespace=target_namespace)
