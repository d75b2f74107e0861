"""`ecr-pullthrough scan` against the real API server: a few hundred objects of every kind, read-only."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.chart import REGISTRY, apply, render
from tests.e2e.controllers import token_kubeconfig
from tests.e2e.controlplane import ControlPlane

DIGEST = "sha256:" + "a" * 64


def template(*images: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]},
    }


def scan(kubeconfig: Path, *args: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "webhook", "scan", "--kubeconfig", str(kubeconfig), "--registry", REGISTRY]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


def test_scan_reports_every_workload_once_with_the_webhooks_own_decisions(control_plane: ControlPlane) -> None:
    suffix = uuid.uuid4().hex[:6]
    apps, bulk, opted, home = (f"{kind}-{suffix}" for kind in ("scan-apps", "scan-bulk", "scan-optout", "scan-home"))
    control_plane.create_namespace(apps)
    control_plane.create_namespace(bulk)
    control_plane.create_namespace(opted, labels={"ecr-pullthrough/skip": "true"})
    control_plane.create_namespace(home)
    selector = {"matchLabels": {"app": "x"}}
    with control_plane.api_client() as api:
        core, apps_api, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
        core.create_namespaced_config_map(
            home,
            {
                "metadata": {"name": "ecr-pullthrough-upstream-status"},
                "data": {
                    "status.json": json.dumps(
                        {
                            "version": 1,
                            "checkedAt": "2099-01-01T00:00:00+00:00",
                            "upstreams": {
                                "docker.io": {
                                    "prefix": "docker-hub",
                                    "registry": REGISTRY,
                                    "verified": True,
                                    "reason": "",
                                    "checkedAt": "2099-01-01T00:00:00+00:00",
                                },
                                "quay.io": {
                                    "prefix": "quay",
                                    "registry": REGISTRY,
                                    "verified": False,
                                    "reason": "no rule for quay.io",
                                    "checkedAt": "2099-01-01T00:00:00+00:00",
                                },
                            },
                        }
                    )
                },
            },
        )
        web = apps_api.create_namespaced_deployment(
            apps,
            {
                "metadata": {"name": "web"},
                "spec": {"selector": selector, "template": template("nginx:1.27", "quay.io/org/a:1")},
            },
        )
        replicas = apps_api.create_namespaced_replica_set(
            apps,
            {
                "metadata": {
                    "name": "web-1",
                    "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": web.metadata.uid}
                    ],
                },
                "spec": {"selector": selector, "template": template("nginx:1.27", "quay.io/org/a:1")},
            },
        )
        core.create_namespaced_pod(
            apps,
            {
                "metadata": {
                    "name": "web-1-abc",
                    "labels": {"app": "x"},
                    "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": replicas.metadata.uid}
                    ],
                },
                "spec": template("nginx:1.27", "quay.io/org/a:1")["spec"],
            },
        )
        apps_api.create_namespaced_stateful_set(
            apps,
            {
                "metadata": {"name": "db"},
                "spec": {"selector": selector, "serviceName": "db", "template": template("bitnami/redis:7.2")},
            },
        )
        apps_api.create_namespaced_daemon_set(
            apps,
            {
                "metadata": {"name": "agent"},
                "spec": {"selector": selector, "template": template("registry.k8s.io/pause:3.10")},
            },
        )
        job_template = template(f"busybox@{DIGEST}")
        job_template["spec"]["restartPolicy"] = "Never"
        batch.create_namespaced_cron_job(
            apps,
            {
                "metadata": {"name": "nightly"},
                "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}},
            },
        )
        core.create_namespaced_pod(
            apps,
            {
                "metadata": {
                    "name": "rewritten",
                    "annotations": {"ecr-pullthrough/original-images": '{"c0": "alpine:3"}'},
                },
                "spec": template(f"{REGISTRY}/docker-hub/library/alpine:3")["spec"],
            },
        )
        core.create_namespaced_pod(opted, {"metadata": {"name": "skipped"}, "spec": template("nginx:1.27")["spec"]})
        for i in range(300):
            core.create_namespaced_pod(
                bulk, {"metadata": {"name": f"p{i}"}, "spec": template(f"app{i % 7}:v1")["spec"]}
            )

    code, output = scan(
        control_plane.kubeconfig_path, "--upstreams", "quay.io=quay", "--namespace", home, "--output", "json"
    )
    assert code == 0, output
    found = json.loads(output)
    rows = {(r["namespace"], r["workload"], r["container"]): r for r in found["rows"]}
    ours = {key: row for key, row in rows.items() if key[0] in (apps, opted)}
    assert {(key[1], row["reason"]) for key, row in ours.items()} == {
        ("Deployment/web", "rewritten"),  # nginx, counted once: not again under its ReplicaSet or pod
        ("Deployment/web", "upstream-unverified"),  # quay.io, with the controller's reason
        ("StatefulSet/db", "rewritten"),
        ("DaemonSet/agent", "other-registry"),
        ("CronJob/nightly", "digest-pinned"),
        ("Pod/rewritten", "already-rewritten"),
        ("Pod/skipped", "namespace-opted-out"),
    }
    assert rows[(apps, "Deployment/web", "c0")]["result"] == f"{REGISTRY}/docker-hub/library/nginx:1.27"
    assert rows[(apps, "Deployment/web", "c1")]["detail"] == "no rule for quay.io"
    assert rows[(apps, "StatefulSet/db", "c0")]["result"] == f"{REGISTRY}/docker-hub/bitnami/redis:7.2"
    assert rows[(apps, "Pod/rewritten", "c0")]["image"] == "alpine:3"
    assert sum(1 for key in rows if key[0] == bulk) == 300
    totals = found["totals"]
    assert totals["digest_pinned_left_alone"] >= 1
    assert "no rule for quay.io" in totals["unverified_upstreams"]
    code, text = scan(control_plane.kubeconfig_path, "--upstreams", "quay.io=quay", "--namespace", home)
    assert code == 0
    assert f"{apps}  (3 of 6 images through the cache)" in text
    # As the webhook does, scan trusts a verification only for its own target: not under another prefix.
    code, output = scan(control_plane.kubeconfig_path, "--prefix", "hub", "--namespace", home, "--output", "json")
    assert code == 0, output
    web = {(r["namespace"], r["workload"], r["container"]): r for r in json.loads(output)["rows"]}[
        (apps, "Deployment/web", "c0")
    ]
    assert web["reason"] == "upstream-unverified"
    assert "under the prefix docker-hub, not hub" in web["detail"]


def test_scan_names_what_it_may_not_read(control_plane: ControlPlane, tmp_path: Path) -> None:
    namespace = f"scan-rbac-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(namespace)
    with control_plane.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
        rbac.create_cluster_role(
            {
                "metadata": {"name": namespace},
                "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]}],
            }
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": namespace},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            }
        )
    token = control_plane.service_account_token(namespace, "reader")
    kubeconfig = token_kubeconfig(control_plane, token, tmp_path / "kubeconfig")
    code, output = scan(kubeconfig, "--namespace", namespace, "--output", "json")
    assert code == 1, output
    problems = json.loads(output)["problems"]
    assert (
        "cannot list deployments.apps (RBAC): Deployments are not scanned; grant `list deployments.apps` to see them"
        in problems
    )
    assert any(p.startswith("no upstream status") for p in problems)


def test_scan_and_doctor_read_an_installed_release_s_settings(
    control_plane: ControlPlane, helm: Path, tmp_path: Path
) -> None:
    """`--release`: the settings ConfigMap and the Deployments' flags of the release, not the defaults."""
    release, namespace = "shop", f"shop-{uuid.uuid4().hex[:6]}"
    apps = f"{namespace}-apps"
    control_plane.create_namespace(namespace)
    control_plane.create_namespace(apps)
    templates = (
        "templates/configmap.yaml",
        "templates/webhook-deployment.yaml",
        "templates/controller-deployment.yaml",
    )
    objects = render(
        helm,
        release=release,
        namespace=namespace,
        show_only=templates,
        set_values={"prefix": "hub", "secretName": "shop-pull", "requireVerifiedUpstreams": "false"},
    )
    with control_plane.api_client() as api:
        apply(api, objects, namespace)
        client.CoreV1Api(api).create_namespaced_pod(
            apps, {"metadata": {"name": "web"}, "spec": template("nginx:1.27")["spec"]}
        )
    base = [sys.executable, "-m", "webhook"]
    where = ["--kubeconfig", str(control_plane.kubeconfig_path), "--release", release, "--namespace", namespace]

    done = subprocess.run([*base, "scan", *where, "--output", "json"], capture_output=True, text=True, check=False)
    found = json.loads(done.stdout)
    [web] = [r for r in found["rows"] if r["namespace"] == apps]
    assert web["result"] == f"{REGISTRY}/hub/library/nginx:1.27", "the release's registry and prefix"
    status = f"{namespace}/{release}-ecr-pullthrough-upstream-status"
    assert any(status in problem for problem in found["problems"]), found["problems"]

    done = subprocess.run(
        [*base, "doctor", *where, "--check", "upstream-status,webhook-configuration", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = done.stdout + done.stderr
    assert f"{release}-ecr-pullthrough-upstream-status" in report, report
    assert f"{release}-ecr-pullthrough-webhook-tls" in report or f"{release}-ecr-pullthrough" in report, report

    done = subprocess.run([*base, "scan", *where[:2], "--release", "nope", "--namespace", namespace],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert f"no settings ConfigMap of release nope in namespace {namespace}" in done.stderr
