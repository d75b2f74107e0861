"""`ecr-pullthrough doctor`, wired: settings in, each selected check run, the checklist printed.

The exit status is 1 when any check fails. The chart's `helm test` runs `doctor --check webhook`.
"""

from __future__ import annotations

import datetime

from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from urllib3.exceptions import HTTPError

from webhook.controller.ecr import aws_session, ecr_client, sts_client
from webhook.controller.kube import api_client
from webhook.core.mutate import PodPolicy
from webhook.core.pullsecret import INSTANCE_LABEL
from webhook.core.selectors import parse_selector
from webhook.core.upstream_status import verification
from webhook.ops import cluster_checks as checks
from webhook.ops import controller_view as controller
from webhook.ops.aws_checks import aws_checks
from webhook.ops.checklist import Checklist, failed, forbidden
from webhook.ops.dryrun import check_webhook_answers
from webhook.ops.kubeapi import Cluster, Forbidden
from webhook.settings import DoctorSettings


def doctor(settings: DoctorSettings) -> int:
    checklist = run_checks(settings)
    print(checklist.to_json() if settings.output == "json" else checklist.to_text(), end="")
    return checklist.exit_status()


def run_checks(settings: DoctorSettings) -> Checklist:
    checklist = Checklist()
    selected = set(settings.check)
    now = datetime.datetime.now(datetime.UTC)
    max_age = datetime.timedelta(seconds=settings.upstream_status_max_age_seconds)
    if "aws" in selected:
        assert settings.region is not None  # resolved with the registry
        assert settings.account_id is not None
        session = aws_session(allow_instance_metadata=True)  # the operator's machine: any credential they have
        checklist.add(
            *aws_checks(
                sts_client(settings.region, session=session, connect_timeout=3, read_timeout=5, max_attempts=2),
                ecr_client(settings.region, session=session, connect_timeout=3, read_timeout=5, max_attempts=2),
                region=settings.region,
                registry=settings.registry_host,
                account=settings.account_id,
                prefix=settings.prefix,
                upstreams=dict(settings.upstreams),
            )
        )
    if not selected - {"aws"}:
        return checklist
    try:
        cluster = Cluster(api_client(settings.kubeconfig), settings.namespace)
    except ConfigException as error:
        fix = "pass --kubeconfig, or set KUBECONFIG, for the cluster to check"
        checklist.add(failed("cluster", "Kubernetes API", f"no cluster to talk to: {error}", fix))
        return checklist
    try:
        _cluster_checks(settings, cluster, checklist, selected, now, max_age)
    except (HTTPError, OSError, ApiException) as error:
        reason = f"{error.status} {error.reason}" if isinstance(error, ApiException) else type(error).__name__
        checklist.add(failed("cluster", "Kubernetes API", f"the API server failed ({reason})", "check the kubeconfig"))
    return checklist


def _cluster_checks(
    settings: DoctorSettings,
    cluster: Cluster,
    checklist: Checklist,
    selected: set[str],
    now: datetime.datetime,
    max_age: datetime.timedelta,
) -> None:
    rewrite_rules = settings.rewrite_rules()
    try:
        document, problem = cluster.status_document(settings.upstream_status_configmap)
        status_forbidden = None
    except Forbidden as error:
        document, problem, status_forbidden = None, "", error
    if "controller" in selected:
        if status_forbidden is not None:
            checklist.add(
                forbidden("controller", "controller's upstream checks", status_forbidden.rule, status_forbidden.where)
            )
        else:
            checklist.add(
                *controller.upstreams(
                    document, problem, rewrite_rules.status_target(settings.pull_secret_mode), now, max_age
                )
            )
        checklist.add(controller.token(cluster, settings.secret_name, now))
        if settings.controller_url:
            checklist.add(*controller.metrics(settings.controller_url, now))
        checklist.add(controller.events(cluster, now))
    if "pull-secrets" in selected:
        opted_out = parse_selector(f"{settings.opt_out_label}=true")
        by_labels = parse_selector(settings.exclude_namespace_selector)
        checklist.add(
            checks.pull_secrets(
                cluster,
                settings.secret_name,
                _instance(settings, cluster),
                frozenset(settings.exclude_namespaces),
                lambda labels: opted_out(labels) or by_labels(labels),
                now,
            )
        )
    if "webhook-configuration" in selected:
        checklist.add(
            checks.webhook_configuration(cluster, settings.webhook_configuration, settings.webhook_tls_secret, now)
        )
    if "webhook" in selected:
        if settings.require_verified_upstreams and status_forbidden is not None:
            checklist.add(forbidden("webhook", "webhook answers", status_forbidden.rule, status_forbidden.where))
        else:
            verified = (
                verification(
                    document, now, max_age, problem, target=rewrite_rules.status_target(settings.pull_secret_mode)
                )
                if settings.require_verified_upstreams
                else None
            )
            policy = PodPolicy(
                rules=rewrite_rules,
                secret_name=settings.secret_name,
                opt_out_label=settings.opt_out_label,
                exclude_namespaces=frozenset(settings.exclude_namespaces),
                mode=settings.mode,
            )
            checklist.add(
                check_webhook_answers(
                    cluster.api,
                    policy,
                    namespace=settings.dry_run_namespace,
                    image=settings.dry_run_image,
                    verified=verified,
                    opt_out_label=settings.opt_out_label,
                )
            )
    if "upstream-status" in selected:
        if status_forbidden is not None:
            checklist.add(
                forbidden("upstream-status", "upstream status", status_forbidden.rule, status_forbidden.where)
            )
        else:
            checklist.add(checks.upstream_status_fresh(document, problem, now, max_age))


def _instance(settings: DoctorSettings, cluster: Cluster) -> str:
    """The installation's instance: as given, else the label of the pull Secret in the release namespace
    (the chart's admission policy lets only the controller write it); "" when unknown (not compared)."""
    if settings.instance:
        return settings.instance
    try:
        secret = cluster.secret_metadata(settings.secret_name, settings.namespace)
    except Forbidden:
        return ""
    return str((((secret or {}).get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL, ""))
