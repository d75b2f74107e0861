"""`ecr-pullthrough scan`, wired: settings in, the cluster read, the report printed."""

from __future__ import annotations

import datetime
import sys

from webhook.controller.kube import api_client
from webhook.core.mutate import PodPolicy
from webhook.ops import cluster
from webhook.ops.scan import report
from webhook.settings import ScanSettings


def scan(settings: ScanSettings) -> int:
    """Print the report; exit 1 when something could not be read, so a script notices."""
    api = api_client(settings.kubeconfig)
    policy = PodPolicy(
        rules=settings.rewrite_rules(),
        secret_name=settings.secret_name,
        opt_out_label=settings.opt_out_label,
        exclude_namespaces=frozenset(settings.exclude_namespaces),
        mode="enforce",
        pull_secret_mode=settings.pull_secret_mode,
    )
    verified, missing = cluster.published_verification(
        api,
        settings.namespace,
        settings.upstream_status_configmap,
        datetime.timedelta(seconds=settings.upstream_status_max_age_seconds),
        settings.rewrite_rules().status_target(settings.pull_secret_mode),
    )

    def progress(kind: str, count: int) -> None:
        if settings.output == "text" and sys.stderr.isatty():
            print(f"\rreading {kind}s: {count}", end="", file=sys.stderr, flush=True)

    objects, namespaces, problems = cluster.read(api, on_page=progress)
    if sys.stderr.isatty() and settings.output == "text":
        print(file=sys.stderr)
    result = report(objects, namespaces, policy, verified)
    if missing:
        result.problems.insert(0, f"{missing}: every upstream is shown as if verified")
    result.problems.extend(problems)
    print(result.to_json() if settings.output == "json" else result.to_text(), end="")
    return 1 if problems else 0
