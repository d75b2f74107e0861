"""The node test bed: a real kubelet and containerd pulling through an ECR stand-in, and the project around them.

Everything runs as local processes inside the private namespace that
tests/node/enter.py made (the ECR host name resolves to 127.0.0.1 only there):

    docker-registry (plain HTTP, 127.0.0.1:5000)   stands in for Docker Hub; `hello` and `pause` pushed with crane
    EcrStandIn (TLS, <ECR host>:443)               serves /v2/docker-hub/<path> from it, for fake-ECR tokens only
    FakeEcr                                         GetAuthorizationToken, the pull-through-cache rules, STS
    etcd + kube-apiserver                           tests/e2e/controlplane.py
    ecr-pullthrough controller                      pull Secrets everywhere, the upstream status ConfigMap
    ecr-pullthrough webhook                         registered with the chart's configuration; its status file
                                                    kept equal to the ConfigMap, as a kubelet keeps a mounted one
    containerd + runc, kubelet (node `node-1`)      hostNetwork pods only (no CNI), nodeName set (no scheduler)
    FakeImds, credential provider plugin            the node's role (pull-secret mode node-role): the controller
                                                    verifies with IMDS's keys; the kubelet's exec plugin
                                                    (tests/node/credential_provider.py) offers the node's token

containerd's hosts.toml is used only for what DOMAIN.md allows: the test CA
for the ECR host, and docker.io (and the sandbox image's registry) sent to the
plain-HTTP upstream. The ECR host itself is reached under its real name, so
containerd sends the kubelet's credentials to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.controllers import ControllerProcess, controller_process, status_file_sync
from tests.e2e.controlplane import ControlPlane
from tests.e2e.fixtures_webhook import registered
from tests.e2e.webhookconfig import mutating_webhook_configuration
from tests.fake_ecr import FakeEcr, fake_ecr
from tests.fake_imds import ACCESS_KEY as NODE_ACCESS_KEY
from tests.fake_imds import ROLE as NODE_ROLE
from tests.fake_imds import FakeImds, fake_imds
from tests.node import install
from tests.node.ecr_standin import EcrStandIn
from tests.node.enter import ECR_HOST
from tests.support import WebhookProcess, require_binary, stop_process, wait_for, webhook_process
from webhook import certs

NODE = "node-1"
RELEASE_NAMESPACE = "ecr-pullthrough"
PULL_SECRET = "ecr-pullthrough"
STATUS_CONFIGMAP = "ecr-pullthrough-upstreams"
UPSTREAM = "127.0.0.1:5000"  # the Docker Hub stand-in
SANDBOX_IMAGE = f"{UPSTREAM}/library/pause:3"
# `hello` images pushed to the upstream; each prints "hello from <its path>" (HELLO_IMAGE, set by crane mutate).
HELLO_IMAGES = ("library/hello:1", "someorg/hello:1")
IMAGES = Path(__file__).parent / "images"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
POD_LOGS = Path("/var/log/pods")


def assert_private_resolution() -> None:
    """The ECR host must resolve to loopback here, and only here; checked before anything starts."""
    addresses = {info[4][0] for info in socket.getaddrinfo(ECR_HOST, 443, proto=socket.IPPROTO_TCP)}
    if addresses != {"127.0.0.1"}:
        raise AssertionError(f"{ECR_HOST} resolves to {addresses}, not only 127.0.0.1: not inside the node bed")


def _run(command: list[str], **kwargs: Any) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _executable(name: str) -> str:
    found = install.find(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make node-bed` (python tests/node/install.py)")
    return found


# -- the upstream registry and its images ------------------------------------------


@contextmanager
def upstream_registry(folder: Path) -> Iterator[str]:
    config = folder / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": str(folder / "registry")}, "delete": {"enabled": True}},
                "http": {"addr": UPSTREAM},
            }
        )
    )
    process = _spawn([_executable("docker-registry"), "serve", str(config)], folder / "registry.log")
    url = f"http://{UPSTREAM}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"docker-registry exited:\n{(folder / 'registry.log').read_text()}")
        with urllib.request.urlopen(f"{url}/v2/", timeout=2) as answer:
            return bool(answer.status == 200)

    try:
        wait_for(ready, timeout=30, what="the upstream registry")
        yield url
    finally:
        stop_process(process)


def push_images(folder: Path) -> None:
    """Build `hello` and `pause` (static Go, the image's only file) and push them with crane, offline."""
    crane = str(require_binary("crane"))
    environment = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    for program in ("hello", "pause"):
        root = folder / f"rootfs-{program}"
        root.mkdir()
        _run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(root / program), f"./{program}"],
             cwd=IMAGES, env=environment)  # fmt: skip
        with tarfile.open(folder / f"{program}.tar", "w") as layer:
            layer.add(root / program, arcname=program)
    pushes = [(path, "hello", f"HELLO_IMAGE={path}") for path in HELLO_IMAGES] + [("library/pause:3", "pause", None)]
    for path, program, env in pushes:
        reference = f"{UPSTREAM}/{path}"
        _run([crane, "append", "--insecure", "-f", str(folder / f"{program}.tar"), "-t", reference])
        mutate = [crane, "mutate", "--insecure", reference, "--entrypoint", f"/{program}"]
        mutate += ["--set-platform", "linux/amd64", "-t", reference] + (["--env", env] if env else [])
        _run(mutate)


# -- the ECR stand-in ------------------------------------------------------------


@contextmanager
def ecr_standin(folder: Path, ecr: FakeEcr, upstream: str) -> Iterator[tuple[EcrStandIn, Path]]:
    ca = certs.make_ca("ecr-pullthrough-node-ca")
    ca_path = folder / "ecr-ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    leaf = certs.make_leaf(ca, ECR_HOST, dns_names=(ECR_HOST,))
    leaf.write(folder / "ecr.crt", folder / "ecr.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "ecr.crt", folder / "ecr.key")
    standin = EcrStandIn(host=ECR_HOST, rules={"docker-hub": upstream}, token_number=ecr.token_number, context=context)
    standin.start()
    try:
        yield standin, ca_path
    finally:
        standin.stop()


# -- containerd and the kubelet --------------------------------------------------


def containerd_config(folder: Path, ca_path: Path) -> Path:
    hosts = folder / "certs.d"
    (hosts / ECR_HOST).mkdir(parents=True)
    # Only the test CA: the host stays the real ECR name, so the kubelet's credentials go to it. No `server`
    # line: containerd 1.6 would try it after the section, without the CA (an x509 error after every 401),
    # and a top-level `ca` beside it is not applied.
    (hosts / ECR_HOST / "hosts.toml").write_text(f'[host."https://{ECR_HOST}"]\n  ca = "{ca_path}"\n')
    for name in ("docker.io", UPSTREAM):  # Docker Hub and the sandbox's registry: the plain-HTTP upstream
        (hosts / name).mkdir()
        (hosts / name / "hosts.toml").write_text(
            f'server = "http://{UPSTREAM}"\n\n[host."http://{UPSTREAM}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    config = folder / "containerd.toml"
    config.write_text(
        f"""version = 2
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # No CAP_SYS_RESOURCE here: without this runc fails ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_cdi = false
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{_executable("runc")}"
  SystemdCgroup = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{hosts}"
"""
    )
    return config


@contextmanager
def containerd(folder: Path, ca_path: Path) -> Iterator[None]:
    config = containerd_config(folder, ca_path)
    log = folder / "containerd.log"
    process = _spawn([_executable("containerd"), "--config", str(config), "--log-level", "info"], log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"containerd exited:\n{log.read_text()[-4000:]}")
        return Path(CONTAINERD_SOCKET).is_socket()

    try:
        wait_for(ready, timeout=30, what="containerd's socket")
        yield
    finally:
        stop_process(process)
        stop_pods_left_behind()


def stop_pods_left_behind() -> None:
    """The pods' shims and containers outlive containerd (by design: a containerd restart keeps pods running).
    Kill the shims of this network namespace and everything under them, and wait until they are gone."""
    own = os.readlink("/proc/self/ns/net")
    doomed: list[int] = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or os.readlink(f"/proc/{entry}/ns/net") != own:
                continue
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().startswith("containerd-shim"):
                    doomed.extend(_with_descendants(int(entry)))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    for pid in reversed(doomed):  # containers first, then their shim
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not [pid for pid in doomed if Path(f"/proc/{pid}").exists() and not _zombie(pid)],
             timeout=30, what="the pods' shims and containers to end")  # fmt: skip


def _with_descendants(pid: int) -> list[int]:
    found = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            for child in listed.read().split():
                found.extend(_with_descendants(int(child)))
    except OSError:
        pass
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


CREDENTIAL_PROVIDER = "ecr-credential-provider"  # the name EKS gives its plugin


def credential_provider_config(folder: Path) -> tuple[Path, Path]:
    """The kubelet's image credential provider for ECR hosts, as EKS configures it (`matchImages`), with our
    test plugin; returns the config file and the plugin folder."""
    plugins = folder / "credential-providers"
    plugins.mkdir()
    wrapper = plugins / CREDENTIAL_PROVIDER
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).parent / "credential_provider.py"}"\n')
    wrapper.chmod(0o755)
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [
            {
                "name": CREDENTIAL_PROVIDER,
                "matchImages": ["*.dkr.ecr.*.amazonaws.com"],
                "defaultCacheDuration": "0s",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "env": [
                    {"name": "NODE_TOKEN_FILE", "value": str(folder / "node-token")},
                    {"name": "NODE_ECR_HOST", "value": ECR_HOST},
                    {"name": "NODE_PROVIDER_LOG", "value": str(folder / "credential-provider.log")},
                ],
            }
        ],
    }
    path = folder / "credential-providers.json"
    path.write_text(json.dumps(config))
    return path, plugins


def kubelet_config(folder: Path) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine mounts cgroup v1 (hybrid); runc with cgroupfs, no QoS cgroups or allocatable enforcement.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": "127.0.0.1",
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # The disk cannot be measured here (eviction manager errors about /dev/vda): never evict.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "syncFrequency": "2s",
        "fileCheckFrequency": "2s",
        "nodeStatusUpdateFrequency": "2s",
        "localStorageCapacityIsolation": False,
    }
    path = folder / "kubelet.json"
    path.write_text(json.dumps(config))
    return path


@contextmanager
def kubelet(folder: Path, plane: ControlPlane) -> Iterator[subprocess.Popen[bytes]]:
    log = folder / "kubelet.log"
    command = [str(require_binary("kubelet")), "--config", str(kubelet_config(folder))]
    # The admin identity: the API server runs RBAC only (no Node authorizer); the kubelet's rights are not the subject.
    command += ["--kubeconfig", str(plane.kubeconfig_path), "--hostname-override", NODE, "--node-ip", "127.0.0.1"]
    providers, plugins = credential_provider_config(folder)
    command += ["--image-credential-provider-config", str(providers)]
    command += ["--image-credential-provider-bin-dir", str(plugins)]
    command += ["--v", "2"]
    process = _spawn(command, log)

    def registered_node() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"kubelet exited:\n{log.read_text()[-6000:]}")
        with plane.api_client() as api:
            try:
                client.CoreV1Api(api).read_node(NODE)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
        return True

    try:
        wait_for(registered_node, timeout=60, what="the kubelet to register its node")
        yield process
    finally:
        stop_process(process, timeout=30)


# -- the project: controller and webhook ------------------------------------------


class NodeBed:
    """The running bed. The controller and the webhook can be stopped and started again by a test."""

    def __init__(
        self, folder: Path, plane: ControlPlane, ecr: FakeEcr, standin: EcrStandIn, ca_path: Path, imds: FakeImds
    ) -> None:
        self.folder, self.plane, self.ecr, self.standin, self.ca_path = folder, plane, ecr, standin, ca_path
        self.imds = imds
        self.status_path = folder / "status.json"
        # Read by the kubelet's credential provider plugin at every pull; absent: it offers nothing.
        self.node_token_path = folder / "node-token"
        self.provider_log_path = folder / "credential-provider.log"
        self.pull_secret_mode = "secret"
        self._controller_stack = ExitStack()
        self._webhook_stack = ExitStack()
        self._controller: ControllerProcess | None = None
        self._webhook: WebhookProcess | None = None
        self._starts = 0

    @property
    def controller(self) -> ControllerProcess:
        assert self._controller is not None, "the controller is stopped"
        return self._controller

    @property
    def webhook(self) -> WebhookProcess:
        assert self._webhook is not None, "the webhook is stopped"
        return self._webhook

    def start_controller(self, *extra: str) -> None:
        """In the bed's current pull-secret mode (in node-role mode with the node role's keys from IMDS only),
        with the bed's arguments and `extra` after them (a later flag wins)."""
        # The controller probes the stand-in under the ECR host name (not the fake's API), trusting the test CA.
        aws = {k: v for k, v in self.ecr.environment().items() if k != "ECR_PULLTHROUGH_REGISTRY_API_URL"}
        aws["SSL_CERT_FILE"] = str(self.ca_path)
        args = controller_args()
        if self.pull_secret_mode == "node-role":
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
                del aws[name]
            aws["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.imds.url
            aws["AWS_SHARED_CREDENTIALS_FILE"] = aws["AWS_CONFIG_FILE"] = str(self.folder / "no-aws-files")
            args = (*args, "--pull-secret-mode", "node-role")
        self._starts += 1
        identity = f"node-controller-{self._starts}"
        self._controller = self._controller_stack.enter_context(
            controller_process(self.plane.kubeconfig_path, self.ecr, self.folder, identity, *args, *extra, aws=aws)
        )

    def stop_controller(self) -> None:
        self._controller_stack.close()
        self._controller = None

    def start_webhook(self) -> None:
        """Run the webhook (a new process, port and CA each time) and register the chart's configuration for it."""
        self._starts += 1
        folder = self.folder / f"webhook-{self._starts}"
        folder.mkdir()
        args = ("--registry", ECR_HOST, "--upstream-status-file", str(self.status_path))
        args = (*args, "--pull-secret-mode", self.pull_secret_mode)
        webhook = self._webhook_stack.enter_context(webhook_process(folder, *args))
        configuration = mutating_webhook_configuration(
            url=f"{webhook.url}/mutate", ca_pem=webhook.ca.cert_pem, release_namespace=RELEASE_NAMESPACE
        )
        self._webhook_stack.enter_context(registered(self.plane, configuration))
        self._webhook = webhook

    def stop_webhook(self) -> None:
        """Stop the webhook process and leave its configuration registered: the API server calls a dead endpoint."""
        self.webhook.stop()
        self._webhook = None

    def restart_webhook(self) -> None:
        self._webhook_stack.close()  # unregisters the old configuration
        self.start_webhook()

    def switch(self, pull_secret_mode: str) -> None:
        """Run the controller and the webhook in another pull-secret mode (as a `helm upgrade` rolls both)."""
        self.stop_controller()
        self.pull_secret_mode = pull_secret_mode
        self.start_controller()
        self.restart_webhook()

    def close(self) -> None:
        self._webhook_stack.close()
        self._controller_stack.close()

    def kubelet_log(self) -> str:
        return (self.folder / "kubelet.log").read_text(errors="replace")

    def containerd_log(self) -> str:
        return (self.folder / "containerd.log").read_text(errors="replace")


def controller_args() -> tuple[str, ...]:
    return (
        "--registry", ECR_HOST,
        "--namespace", RELEASE_NAMESPACE,
        "--lease-name", "ecr-pullthrough-controller",
        "--lease-seconds", "4",
        "--renew-deadline-seconds", "3",
        "--retry-seconds", "0.5",
        "--token-refresh-floor-seconds", "1",
        "--api-qps", "1000",
        "--api-burst", "1000",
        "--upstream-status-configmap", STATUS_CONFIGMAP,
        "--verify-seconds", "5",
        "--probe-images", "docker.io=library/hello:1",
        # Off: several tests here make pulls fail on purpose, within one window of each other, and the
        # successes that outweigh such failures in a real cluster are few. tests/node/test_guard.py
        # starts its own controller with the guard on.
        "--pull-guard=false",
    )  # fmt: skip


@contextmanager
def node_bed(folder: Path) -> Iterator[NodeBed]:
    assert_private_resolution()
    with ExitStack() as stack:
        upstream = stack.enter_context(upstream_registry(folder))
        push_images(folder)
        ecr = stack.enter_context(fake_ecr())
        imds = stack.enter_context(fake_imds())
        ecr.principals[NODE_ACCESS_KEY] = f"arn:aws:sts::{ecr.account}:assumed-role/{NODE_ROLE}/i-0123456789abcdef0"
        standin, ca_path = stack.enter_context(ecr_standin(folder, ecr, upstream))
        stack.enter_context(containerd(folder, ca_path))
        plane = ControlPlane(require_binary("etcd"), require_binary("kube-apiserver"))
        plane.start()
        stack.callback(plane.stop)
        plane.create_namespace(RELEASE_NAMESPACE)
        bed = NodeBed(folder, plane, ecr, standin, ca_path, imds)
        stack.callback(bed.close)
        bed.start_controller()
        stack.enter_context(status_file_sync(plane, bed.status_path, RELEASE_NAMESPACE, STATUS_CONFIGMAP))
        bed.start_webhook()
        stack.enter_context(kubelet(folder, plane))
        yield bed
