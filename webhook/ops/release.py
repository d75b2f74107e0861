"""The settings of an installed Helm release, for `scan` and `doctor --release NAME`.

The chart puts the shared settings in one ConfigMap (both Deployments read it as environment
variables) and passes the rest as flags on the Deployments. Both are read here and returned as
environment variables, `ECR_PULLTHROUGH_<NAME>`; the caller makes them defaults, so the operator's
own flags and environment still win. Read-only: `list` on ConfigMaps and Deployments in the release
namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from webhook.controller.kube import REQUEST_TIMEOUT, api_client, body

ENV_PREFIX = "ECR_PULLTHROUGH_"
# Flags the chart passes on the Deployments that the operator tools also take.
FLAGS = frozenset(
    {
        "upstream-status-configmap",
        "upstream-status-max-age-seconds",
        "require-verified-upstreams",
        "exclude-namespace-selector",
        "webhook-configuration",
        "webhook-tls-secret",
    }
)


class ReleaseNotFoundError(Exception):
    """The release's settings could not be read; the message says why and what to do."""


def release_environment(kubeconfig: Path | None, namespace: str, release: str) -> dict[str, str]:
    """`ECR_PULLTHROUGH_*` settings of the release `release` installed in `namespace`."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/name=ecr-pullthrough"
    api = api_client(kubeconfig)
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    try:
        configmaps = body(
            core.list_namespaced_config_map(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        deployments = body(
            apps.list_namespaced_deployment(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
    except ApiException as error:
        if error.status == 403:
            raise ReleaseNotFoundError(
                f"reading release {release} needs `list` on configmaps and deployments.apps in {namespace}"
            ) from None
        raise ReleaseNotFoundError(f"reading release {release} failed: {error.status} {error.reason}") from None
    except (HTTPError, OSError) as error:
        raise ReleaseNotFoundError(f"reading release {release} failed: {type(error).__name__}: {error}") from None
    settings = [
        data
        for item in configmaps.get("items") or []
        if isinstance(data := item.get("data"), dict) and f"{ENV_PREFIX}PREFIX" in data
    ]
    if not settings:
        raise ReleaseNotFoundError(
            f"no settings ConfigMap of release {release} in namespace {namespace} (labels {selector}): "
            "check the release name and --namespace (helm list -A)"
        )
    environment = {k: str(v) for k, v in settings[0].items() if k.startswith(ENV_PREFIX)}
    for deployment in deployments.get("items") or []:
        pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            for argument in container.get("args") or []:
                name, equals, value = str(argument).removeprefix("--").partition("=")
                if equals and name in FLAGS:
                    environment[ENV_PREFIX + name.replace("-", "_").upper()] = value
        # The status ConfigMap and the serving certificate, as the webhook mounts them (any certificate mode).
        for volume in pod.get("volumes") or []:
            if volume.get("name") == "status" and (volume.get("configMap") or {}).get("name"):
                environment[f"{ENV_PREFIX}UPSTREAM_STATUS_CONFIGMAP"] = volume["configMap"]["name"]
            if volume.get("name") == "tls" and (volume.get("secret") or {}).get("secretName"):
                environment[f"{ENV_PREFIX}WEBHOOK_TLS_SECRET"] = volume["secret"]["secretName"]
    try:  # the webhook configuration (cluster-scoped); doctor names the permission itself if this fails
        configurations = body(
            client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration(
                label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        names = [item["metadata"]["name"] for item in configurations.get("items") or []]
        if len(names) == 1:
            environment[f"{ENV_PREFIX}WEBHOOK_CONFIGURATION"] = names[0]
    except (ApiException, HTTPError, OSError):
        pass
    return environment
