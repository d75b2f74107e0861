"""A throwaway Kubernetes control plane: etcd and kube-apiserver as local processes.

Modelled on controller-runtime's envtest (pkg/internal/testing/controlplane),
with one difference: the ServiceAccount admission plugin stays on, as in a real
cluster, so `create_namespace` also creates the `default` ServiceAccount that the
missing controller-manager would have made. Nothing else of the controller-manager
exists here: namespaces never finish deleting and nothing is garbage-collected.
"""

from __future__ import annotations

import atexit
import http.client
import json
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from tests.support import free_port
from webhook.certs import KeyPair, make_ca, make_leaf

# Generous: a cold kube-apiserver on a busy 2-core CI runner takes 10-30 s to get ready.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0

# Metadata only: no request or response bodies, so Secret data never reaches the log.
# One event per request (ResponseComplete), so tests can count writes by counting lines.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} was never written)"


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """etcd and kube-apiserver on free 127.0.0.1 ports, with a generated PKI in a temp dir."""

    def __init__(self, etcd_binary: Path, apiserver_binary: Path) -> None:
        self.etcd_binary = etcd_binary
        self.apiserver_binary = apiserver_binary
        self.dir = Path(tempfile.mkdtemp(prefix="ecr-pullthrough-cp-"))
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self.etcd_peer_url = f"http://127.0.0.1:{free_port()}"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_log = self.dir / "etcd.log"
        self.apiserver_log = self.dir / "kube-apiserver.log"
        self.audit_log = self.dir / "audit.log"
        self.kubeconfig_path = self.dir / "kubeconfig"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0  # how long the last start() took, for the record
        try:
            self._write_pki()
            self._write_audit_policy()
            self._write_kubeconfig()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # -- files -------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        self.ca: KeyPair = make_ca("ecr-pullthrough-e2e-ca")
        self.ca_path = pki / "ca.crt"
        self.ca.write(self.ca_path, pki / "ca.key")
        serving = make_leaf(
            self.ca,
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1",),
        )
        self.serving_cert_path, self.serving_key_path = pki / "apiserver.crt", pki / "apiserver.key"
        serving.write(self.serving_cert_path, self.serving_key_path)
        admin = make_leaf(self.ca, "admin", organization="system:masters", client=True, days=1)
        self.admin_cert_path, self.admin_key_path = pki / "admin.crt", pki / "admin.key"
        admin.write(self.admin_cert_path, self.admin_key_path)
        # One file serves --service-account-key-file and --service-account-signing-key-file:
        # kube-apiserver derives the verifying key from a private key, but only from an
        # "EC PRIVATE KEY" (SEC1) block; a PKCS#8 "PRIVATE KEY" is "no valid public key" to it.
        self.service_account_key_path = pki / "sa.key"
        self.service_account_key_path.touch(mode=0o600)
        sa_key = ec.generate_private_key(ec.SECP256R1())
        self.service_account_key_path.write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )

    def _write_audit_policy(self) -> None:
        self.audit_policy_path = self.dir / "audit-policy.json"
        self.audit_policy_path.write_text(json.dumps(AUDIT_POLICY))

    def _write_kubeconfig(self) -> None:
        # JSON is YAML, so kubectl, helm and the Python client all read this.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)}}],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.admin_cert_path),
                        "client-key": str(self.admin_key_path),
                    },
                }
            ],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
            "current-context": "e2e",
        }
        self.kubeconfig_path.write_text(json.dumps(config, indent=2))

    # -- processes ---------------------------------------------------------

    def start(self) -> None:
        """Start etcd, then kube-apiserver, and wait until it is ready; a failed start cleans up."""
        # Also covers an interpreter exit while a test holds a started control plane.
        atexit.register(self.stop)
        started = time.monotonic()
        try:
            self._etcd = self._spawn([str(self.etcd_binary), *self._etcd_args()], self.etcd_log)
            self._wait("etcd", self._etcd, self.etcd_log, self._etcd_healthy)
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port, PKI and etcd."""
        self._terminate(self._apiserver)
        self._start_apiserver()

    def stop(self) -> None:
        """Terminate both processes and remove the temp dir. Safe to call twice."""
        self._terminate(self._apiserver)
        self._terminate(self._etcd)
        self._apiserver = self._etcd = None
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def apiserver_log_tail(self, lines: int = 60) -> str:
        return _tail(self.apiserver_log, lines)

    def _start_apiserver(self) -> None:
        self._apiserver = self._spawn([str(self.apiserver_binary), *self._apiserver_args()], self.apiserver_log)
        self._wait("kube-apiserver", self._apiserver, self.apiserver_log, self._apiserver_ready)

    def _etcd_args(self) -> list[str]:
        return [
            "--name=e2e",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={self.etcd_peer_url}",
            f"--initial-advertise-peer-urls={self.etcd_peer_url}",
            f"--initial-cluster=e2e={self.etcd_peer_url}",
            # Throwaway data: skipping fsync makes every API write much faster.
            "--unsafe-no-fsync",
        ]

    def _apiserver_args(self) -> list[str]:
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={self.serving_cert_path}",
            f"--tls-private-key-file={self.serving_key_path}",
            f"--client-ca-file={self.ca_path}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={self.service_account_key_path}",
            f"--service-account-signing-key-file={self.service_account_key_path}",
            f"--audit-policy-file={self.audit_policy_path}",
            f"--audit-log-path={self.audit_log}",
            # Blocking: an event is written before the response returns, so a test
            # can count writes right after making them.
            "--audit-log-mode=blocking",
        ]

    @staticmethod
    def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        # Appended, so a restarted kube-apiserver keeps the earlier run's log.
        # The child holds its own copy of the descriptor; ours can close at once.
        with log.open("ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    @staticmethod
    def _wait(name: str, process: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if process.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {process.returncode}; last lines of {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} not ready after {START_TIMEOUT:.0f}s; last lines of {log}:\n{_tail(log)}"
                )
            time.sleep(0.1)

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(self.admin_cert_path, self.admin_key_path)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=2)
        try:
            connection.request("GET", "/readyz")
            with connection.getresponse() as response:
                return response.status == 200
        except OSError:
            return False
        finally:
            connection.close()

    # -- API helpers -------------------------------------------------------

    def api_client(self, token: str | None = None) -> client.ApiClient:
        """An admin (system:masters) client, or one that authenticates with a bearer `token`.

        Close it (or use it as a context manager): an unclosed pool leaks sockets.
        """
        if token is None:
            configuration = client.Configuration(
                host=self.url,
                ssl_ca_cert=str(self.ca_path),
                cert_file=str(self.admin_cert_path),
                key_file=str(self.admin_key_path),
            )
        else:
            configuration = client.Configuration(
                host=self.url,
                ssl_ca_cert=str(self.ca_path),
                api_key={"authorization": token},
                api_key_prefix={"authorization": "Bearer"},
            )
        return client.ApiClient(configuration)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and its `default` ServiceAccount (no controller-manager makes it here)."""
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
            core.create_namespaced_service_account(
                name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
            )

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        """A bound token for the ServiceAccount, from the TokenRequest API."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(expiration_seconds=expiration_seconds)
        )
        with self.api_client() as api:
            response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        token = response.status.token if response.status else None
        if not token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        return token

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
