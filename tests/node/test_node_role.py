"""Pull-secret mode node-role on a real node: pods pulled through the ECR stand-in with the node's own
credentials, from the kubelet's image credential provider plugin (issue 20).

The bed runs in node-role mode for this module (controller and webhook, as a
`helm upgrade` would roll them): the controller verifies with the node role's
keys from the fake IMDS, and the webhook adds no pull secret. The kubelet's
credential provider plugin (`tests/node/credential_provider.py`, configured for
`*.dkr.ecr.*.amazonaws.com` as on EKS) offers the token the fake ECR issued to
the node role's key. Afterwards the bed goes back to secret mode for the other
node tests.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.fixtures_webhook import create_pod, new_namespace, pull_secrets
from tests.fake_imds import ACCESS_KEY as NODE_ACCESS_KEY
from tests.node.bed import PULL_SECRET, NodeBed
from tests.node.pods import (
    REWRITTEN,
    RUN_TIMEOUT,
    container_log,
    log_mark,
    node_pod,
    phase,
    pulls_since,
    wait_phase,
    wait_verified,
)
from tests.support import wait_for

HELLO = "/v2/docker-hub/library/hello"


def rewritten_on_dry_run(bed: NodeBed, namespace: str) -> bool:
    """Whether the webhook rewrites a Docker Hub pod now (it re-reads its status file at most once a second)."""
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod(f"probe-{next(PROBES)}", {"main": "hello:1"}), dry_run=True)
    return bool(stored["spec"]["containers"][0]["image"].startswith(REWRITTEN))


PROBES = itertools.count()


@pytest.fixture(scope="module")
def node_role(bed: NodeBed) -> Iterator[NodeBed]:
    bed.switch("node-role")
    try:
        wait_verified(bed)
        probes = new_namespace(bed.plane, "node-role-probe")
        wait_for(lambda: rewritten_on_dry_run(bed, probes), timeout=30, what="the node-role webhook to rewrite")
        yield bed
    finally:
        bed.node_token_path.unlink(missing_ok=True)  # the other node tests pull with their pull secret only
        bed.switch("secret")
        wait_verified(bed)
        probes = new_namespace(bed.plane, "secret-probe")
        wait_for(lambda: rewritten_on_dry_run(bed, probes), timeout=30, what="the secret-mode webhook to rewrite")


def node_token(bed: NodeBed) -> int:
    """A token the fake ECR issues to the node role (as EKS's ecr-credential-provider asks for one), handed
    to the kubelet's credential provider plugin; its number."""
    status, _ = bed.ecr.answer("GetAuthorizationToken", b"", NODE_ACCESS_KEY)
    assert status == 200
    number = bed.ecr.tokens_issued
    bed.node_token_path.write_text(bed.ecr.password(number))
    return number


def no_pull_secret_in(bed: NodeBed, namespace: str) -> bool:
    with bed.plane.api_client() as api:
        try:
            client.CoreV1Api(api).read_namespaced_secret(PULL_SECRET, namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
    return False


def provider_calls(bed: NodeBed) -> list[dict[str, object]]:
    if not bed.provider_log_path.exists():
        return []
    return [json.loads(line) for line in bed.provider_log_path.read_text().splitlines()]


def test_the_controller_verified_as_the_node_role(node_role: NodeBed) -> None:
    """The status the webhook trusts was made with the node role's token, through the stand-in."""
    tokens = node_role.ecr.token_principals
    verifying = [n for n, key in tokens.items() if key == NODE_ACCESS_KEY]
    assert verifying, f"no token was issued to the node role: {tokens}"
    probes = [r for r in node_role.standin.requests if r.agent.startswith("Python-urllib") and r.token in verifying]
    assert any(r.status == 200 and r.path.startswith(HELLO) for r in probes), node_role.standin.requests[-5:]


def test_a_rewritten_pod_without_pull_secrets_is_pulled_with_the_nodes_credentials_and_runs(
    node_role: NodeBed,
) -> None:
    bed = node_role
    token = node_token(bed)
    namespace = new_namespace(bed.plane, "node-role-runs")
    start, asked = log_mark(bed), len(provider_calls(bed))
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("hello", {"main": "hello:1", "org": "someorg/hello:1"}))
    assert [c["image"] for c in stored["spec"]["containers"]] == [
        f"{REWRITTEN}/library/hello:1",
        f"{REWRITTEN}/someorg/hello:1",
    ]
    assert pull_secrets(stored) == []

    done = wait_phase(bed, namespace, "hello", "Succeeded")

    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    assert container_log(namespace, done, "org") == "hello from someorg/hello:1"
    assert no_pull_secret_in(bed, namespace), "node-role mode writes no Secret"
    for repository in (HELLO, "/v2/docker-hub/someorg/hello"):
        pulls = pulls_since(bed, start, repository)
        assert ("AWS", token, 200) in pulls, f"containerd's requests for {repository}: {pulls}"
        assert {(user, number) for user, number, _ in pulls if user is not None} == {("AWS", token)}
    # The kubelet asks its plugin per image repository (no tag).
    assert {"image": f"{REWRITTEN}/library/hello", "offered": True} in provider_calls(bed)[asked:]


def test_with_the_nodes_token_revoked_the_pull_is_refused(node_role: NodeBed) -> None:
    """What worked above was the node's credential: revoked, the same pull is refused."""
    bed = node_role
    token = node_token(bed)
    bed.ecr.revoke(token)
    namespace = new_namespace(bed.plane, "node-role-revoked")
    start = log_mark(bed)
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, node_pod("refused", {"main": "hello:1"}))
    assert stored["spec"]["containers"][0]["image"] == f"{REWRITTEN}/library/hello:1"

    def refused() -> str | None:
        statuses = (phase(bed, namespace, "refused").get("status") or {}).get("containerStatuses") or []
        reason = ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason") if statuses else None
        return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(refused, timeout=RUN_TIMEOUT, interval=0.5, what="the pull to be refused")
    attempts = pulls_since(bed, start, HELLO)
    # Asked with the node's (revoked) token, user AWS, and refused; nothing was served.
    assert ("AWS", None, 401) in attempts
    assert {status for _, _, status in attempts} == {401}
    assert phase(bed, namespace, "refused")["status"]["phase"] == "Pending"


def test_a_pod_rewritten_in_secret_mode_still_pulls_after_its_secret_is_removed(node_role: NodeBed) -> None:
    """After the switch, pods made in secret mode name a pull Secret that `remove-pull-secrets` may have
    deleted: the kubelet only warns about it and pulls with the node's credentials."""
    bed = node_role
    token = node_token(bed)
    namespace = new_namespace(bed.plane, "node-role-earlier")
    body = node_pod("earlier", {"main": f"{REWRITTEN}/library/hello:1"})
    body["spec"]["imagePullSecrets"] = [{"name": PULL_SECRET}]  # as the secret-mode webhook made it
    start = log_mark(bed)
    with bed.plane.api_client() as api:
        stored = create_pod(api, namespace, body)
    assert pull_secrets(stored) == [{"name": PULL_SECRET}]
    assert no_pull_secret_in(bed, namespace)

    done = wait_phase(bed, namespace, "earlier", "Succeeded")

    assert container_log(namespace, done, "main") == "hello from library/hello:1"
    assert ("AWS", token, 200) in pulls_since(bed, start, HELLO)
