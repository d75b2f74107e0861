"""The MutatingWebhookConfiguration the Helm chart ships, rendered by the real helm, for the end-to-end tests.

What the tests register is what we ship: `chart/templates/mutatingwebhookconfiguration.yaml`
rendered with `helm template`, with only `clientConfig` pointed at the local webhook
process (a URL and its caBundle instead of the in-cluster Service) and, where a test
needs it, another name or timeout set through the chart's own values.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.controlplane import build
from tests.e2e.chart import render

OPT_OUT_LABEL = "ecr-pullthrough/skip"
RELEASE_NAMESPACE = "ecr-pullthrough"
TEMPLATE = "templates/mutatingwebhookconfiguration.yaml"


def mutating_webhook_configuration(
    *,
    url: str,
    ca_pem: bytes,
    name: str = "ecr-pullthrough",
    timeout_seconds: int = 5,
    release_namespace: str = RELEASE_NAMESPACE,
    exclude_namespaces: tuple[str, ...] = ("kube-system",),
    exclude_namespace_selector: str = "",
) -> dict[str, Any]:
    """The chart's configuration, calling the webhook at `url` (https) trusted through `ca_pem`."""
    [configuration] = render(
        build.binary_path("helm"),
        namespace=release_namespace,
        show_only=(TEMPLATE,),
        set_values={
            "fullnameOverride": name,
            "webhook.timeoutSeconds": str(timeout_seconds),
            "excludeNamespaces": "{" + ",".join(exclude_namespaces) + "}",
            "excludeNamespaceSelector": exclude_namespace_selector.replace(",", "\\,"),  # helm --set splits at ,
        },
    )
    for webhook in configuration["webhooks"]:
        webhook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
    return configuration  # type: ignore[no-any-return]
