"""Drills: the controller through leadership changes, dead loops and API-server faults.

Real API server, the chart's RBAC and admission policy, the fake ECR endpoint, and several
controller processes where leadership matters. Bounds are generous and polled with deadlines;
the tight figures are in `make bench`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

from kubernetes import client

from tests.e2e.chart import REGISTRY
from tests.e2e.controllers import ControllerProcess, controller_process
from tests.e2e.controlplane import ControlPlane
from tests.e2e.test_controller import (  # noqa: F401 (fixtures)
    FAST,
    NO_WRITE_LIMIT,
    OURS,
    RELEASE_NAMESPACE,
    SECRET,
    STATUS_CONFIGMAP,
    all_hold,
    core,
    ecr,
    kubeconfig,
    leader,
    namespaces,
    no_adoptable_token,
    password_in,
    published,
    secret,
    secret_writes,
)
from tests.fake_ecr import FakeEcr
from tests.stall_proxy import stall_proxy
from tests.support import wait_for

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(running: ControllerProcess) -> float:
    """User plus system CPU the process has used so far (from /proc)."""
    fields = Path(f"/proc/{running.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def ready_without_problems(running: ControllerProcess) -> bool:
    status, text = running.get("/readyz")
    return status == 200 and "problems" not in json.loads(text)


def stop_past_the_lease(running: ControllerProcess, standby: ControllerProcess) -> None:
    """Freeze `running` (SIGSTOP) until `standby` has taken the lease over, then let it go on."""
    running.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: leader(standby), timeout=30, what="the standby to take the lease over")
    finally:
        running.process.send_signal(signal.SIGCONT)


def test_a_former_leader_resumes_as_a_quiet_ready_standby(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Items 1 and 4: no CPU spin on a passed refresh time, no stale leader-only state or gauges."""
    ecr.lifetime_seconds = 6  # the refresh time passes 3 s after each fetch
    ecr.import_denied.add("docker-hub")  # the leader reports docker.io unverified, and /readyz says so
    args = (*FAST, *NO_WRITE_LIMIT, "--upstream-status-configmap", STATUS_CONFIGMAP, "--verify-seconds", "1")
    with controller_process(kubeconfig, ecr, tmp_path, "old", *args) as old:
        wait_for(lambda: leader(old), timeout=30, what="the first replica to lead")
        wait_for(
            lambda: "docker.io unverified" in old.get("/readyz")[1], timeout=30, what="the leader to report docker.io"
        )
        assert old.metric("ecr_pullthrough_token_expiry_timestamp_seconds") > 0
        with controller_process(kubeconfig, ecr, tmp_path, "new", *args) as new:
            stop_past_the_lease(old, new)
            wait_for(lambda: not leader(old), timeout=20, what="the resumed replica to step down")

            # A standby is ready to take over, and reports nothing only a leader knows.
            wait_for(lambda: ready_without_problems(old), timeout=20, what="the former leader ready, no problems")
            assert old.metric("ecr_pullthrough_token_expiry_timestamp_seconds") == 0
            _, metrics = old.get("/metrics")
            assert "ecr_pullthrough_upstream_verified{" not in metrics

            # Its old token's refresh time has long passed: a standby must not loop on it.
            # A measurement window, not a synchronisation: CPU is counted over it.
            before, started = cpu_seconds(old), time.monotonic()
            time.sleep(15)
            used = cpu_seconds(old) - before
            elapsed = time.monotonic() - started
            assert used < 3, f"the standby used {used:.1f} s of CPU in {elapsed:.0f} s"
            assert not leader(old)
            assert leader(new)


def test_a_loop_hit_by_an_unexpected_error_recovers_and_stays_live(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 2: an http.client error (not an OSError) from the registry probe used to end the monitor's thread."""
    ecr.registry_garbage = True
    args = (*FAST, *NO_WRITE_LIMIT, "--upstream-status-configmap", STATUS_CONFIGMAP, "--verify-seconds", "1")
    with controller_process(kubeconfig, ecr, tmp_path, "a", *args) as running:
        wait_for(lambda: "BadStatusLine" in running.log(), timeout=30, what="the probe to fail with BadStatusLine")
        assert running.get("/healthz")[0] == 200
        ecr.registry_garbage = False

        def docker_hub_verified() -> bool:
            status = published(core)
            return bool(status and status["upstreams"].get("docker.io", {}).get("verified"))

        wait_for(docker_hub_verified, timeout=90, what="verification to resume after the error")
        assert running.get("/healthz")[0] == 200


def test_a_write_that_keeps_failing_backs_off_and_says_why(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 3: an immutable Secret of ours answers every update with 422; retries must slow down."""
    [name] = namespaces(control_plane, "immutable", 1)
    stale = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=SECRET,
            labels=OURS,
            annotations={"ecr-pullthrough/token-expires-at": "2026-01-01T00:00:00+00:00"},
        ),
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": '{"auths":{}}'},
        immutable=True,
    )
    core.create_namespaced_secret(name, stale)
    try:
        drill_write_backoff(control_plane, core, ecr, tmp_path, kubeconfig, name)
    finally:  # later tests' controllers would fail on it too
        core.delete_namespaced_secret(SECRET, name)


def drill_write_backoff(
    control_plane: ControlPlane,
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
    kubeconfig: Path,  # noqa: F811
    name: str,
) -> None:
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST, *NO_WRITE_LIMIT) as running:
        wait_for(lambda: secret_writes(control_plane, {name}) >= 1, timeout=30, what="the first update attempt")
        first = time.monotonic()
        wait_for(
            lambda: running.metric("ecr_pullthrough_secret_write_failures_total", reason="invalid") >= 1,
            timeout=30,
            what="the failure counted by reason",
        )

        def event() -> str | None:
            for item in core.list_namespaced_event(name).items:
                if item.reason == "SecretWriteFailed":
                    return item.message or ""
            return None

        message = wait_for(event, timeout=30, what="a SecretWriteFailed event")
        assert "422" in message
        assert "immutable" in message
        # A measurement window: a fixed 5 s retry makes 6 attempts in 25 s; backoff from 5 s makes at most 4.
        time.sleep(max(0.0, 25 - (time.monotonic() - first)))
        attempts = secret_writes(control_plane, {name})
        assert attempts <= 4, f"{attempts} update attempts in 25 s"
        assert running.process.poll() is None


def test_a_renew_call_that_hangs_cannot_keep_a_replica_leading(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 5: behind a stalled network path, a leader must give up by its renew deadline, not 30 s later."""
    with stall_proxy(control_plane.port) as proxy:
        proxied = json.loads(kubeconfig.read_text())
        proxied["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied_path = tmp_path / "proxied-kubeconfig"
        proxied_path.write_text(json.dumps(proxied))
        with controller_process(proxied_path, ecr, tmp_path, "behind-proxy", *FAST) as stalled:
            wait_for(lambda: leader(stalled), timeout=30, what="the proxied replica to lead")
            with controller_process(kubeconfig, ecr, tmp_path, "direct", *FAST) as direct:
                proxy.stall()
                stalled_at = time.monotonic()
                # --renew-deadline-seconds 3: it must stop leading well before a 30 s read timeout ends.
                wait_for(lambda: not leader(stalled), timeout=10, what="the stalled leader to step down")
                stepped_down = time.monotonic() - stalled_at
                wait_for(lambda: leader(direct), timeout=30, what="the other replica to take over")
                assert not leader(stalled), "two leaders at once"
                assert stepped_down < 10
                proxy.resume()


def test_a_new_leader_with_a_fresh_token_in_its_own_namespace_writes_nothing(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Items 6 and 8: a cold start and a handover adopt the token of the controller's own Secret."""
    names = namespaces(control_plane, "handover", 20)
    ours = {*names, RELEASE_NAMESPACE}
    with controller_process(kubeconfig, ecr, tmp_path, "first", *FAST, *NO_WRITE_LIMIT):
        wait_for(lambda: all_hold(core, sorted(ours), ecr.password(1)), timeout=60, what="every secret written")
    writes, tokens = secret_writes(control_plane, ours), ecr.tokens_issued
    args = (*FAST, *NO_WRITE_LIMIT, "--log-level", "debug")
    with controller_process(kubeconfig, ecr, tmp_path, "second", *args) as second:
        wait_for(lambda: leader(second), timeout=30, what="the new replica to lead")
        wait_for(lambda: "ECR token adopted from our own Secret" in second.log(), timeout=30, what="the token adopted")

        def all_seen_in_sync() -> bool:
            seen = {
                entry.get("namespace")
                for line in second.log().splitlines()
                if line.startswith("{") and (entry := json.loads(line)).get("event") == "secret in sync"
            }
            return ours <= seen

        wait_for(all_seen_in_sync, timeout=60, what="every namespace of ours looked at and found in sync")
        assert ecr.tokens_issued == tokens, "a new token was fetched"
        assert secret_writes(control_plane, ours) == writes, "the handover wrote Secrets"
        [later] = namespaces(control_plane, "after-handover", 1)
        wait_for(lambda: password_in(secret(core, later)) == ecr.password(1), what="a new namespace served")


def test_a_token_is_never_adopted_from_a_tenant_namespace(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    core: client.CoreV1Api,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Item 8's guard: a planted Secret in a tenant namespace is overwritten, never copied."""
    [tenant] = namespaces(control_plane, "tenant", 1)
    planted = json.dumps({"auths": {REGISTRY: {"username": "AWS", "password": "planted", "auth": "x"}}})
    core.create_namespaced_secret(
        tenant,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=SECRET,
                labels=OURS,
                annotations={"ecr-pullthrough/token-expires-at": "2099-01-01T00:00:00+00:00"},
            ),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": planted},
        ),
    )
    [other] = namespaces(control_plane, f"victim-{uuid.uuid4().hex[:4]}", 1)
    with controller_process(kubeconfig, ecr, tmp_path, "a", *FAST, *NO_WRITE_LIMIT):
        wait_for(lambda: password_in(secret(core, other)) == ecr.password(1), timeout=30, what="a fetched token")
        assert password_in(secret(core, other)) != "planted"


def test_standby_cpu_probe_is_honest(
    control_plane: ControlPlane,
    kubeconfig: Path,  # noqa: F811
    ecr: FakeEcr,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The CPU measurement the first drill relies on can see a busy process (it is not always zero)."""
    with controller_process(kubeconfig, ecr, tmp_path, "probe", *FAST) as running:
        before = cpu_seconds(running)
        wait_for(lambda: cpu_seconds(running) > before, timeout=30, interval=0.2, what="some CPU to be counted")
