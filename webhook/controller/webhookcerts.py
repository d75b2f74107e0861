"""Self-contained serving certificates for the webhook, owned by the controller (as kyverno does).

Helm acts only at install and upgrade, so something running must renew: the
leader keeps one Secret in its namespace holding a CA and a serving
certificate for the webhook's Service, renews either before it expires, and
keeps the webhook configuration's caBundle in step. The webhook pods mount the
Secret; the kubelet updates the files and the webhook re-reads them.

The controller owns caBundle alone: the chart renders none (a `lookup` in the
template went backwards on `helm rollback`, and blanked it on an upgrade while
the Secret was absent). It watches the configuration and the Secret, so any
drift (a rollback, an upgrade that drops the field, a deleted Secret) is
repaired within seconds, not at the next periodic check.

No failed admissions on rotation: a new serving certificate is signed by the
same CA (caBundle unchanged); a new CA is first added to caBundle next to the
old one, and only then does the Secret switch to it.
"""

from __future__ import annotations

import base64
import datetime
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook import certs
from webhook.controller.heartbeat import Heartbeats
from webhook.controller.kube import REQUEST_TIMEOUT, WATCH_MAX_SILENCE, ListWatch, body
from webhook.core.pullsecret import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger("ecr_pullthrough.certificates")

CA_DAYS = 3650
SERVING_DAYS = 365
# Renew when less than this fraction of a certificate's life is left.
RENEW_FRACTION = 1 / 3


@dataclass(frozen=True, slots=True)
class Material:
    """What the Secret holds: PEM bytes by key (ca.crt, ca.key, tls.crt, tls.key, ca-previous.crt)."""

    files: dict[str, bytes]

    @classmethod
    def from_secret(cls, secret: dict[str, Any] | None) -> Material:
        data = (secret or {}).get("data") or {}
        return cls({key: base64.b64decode(value) for key, value in data.items()})

    def cert(self, key: str) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(self.files[key])
        except (KeyError, ValueError):
            return None

    def key(self, key: str) -> ec.EllipticCurvePrivateKey | None:
        try:
            loaded = serialization.load_pem_private_key(self.files[key], password=None)
        except (KeyError, ValueError, TypeError):
            return None
        return loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None


def _fresh(cert: x509.Certificate | None, now: datetime.datetime) -> bool:
    if cert is None:
        return False
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now < end - (end - start) * RENEW_FRACTION


def _names(cert: x509.Certificate) -> set[str]:
    try:
        return set(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        return set()


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (InvalidSignature, ValueError, TypeError):  # bad signature, another issuer, another key type
        return False


def plan(current: Material, dns_names: tuple[str, ...], now: datetime.datetime) -> Material | None:
    """The Secret's next content, or None when the current one is good for a while yet."""
    ca, ca_key, serving = current.cert("ca.crt"), current.key("ca.key"), current.cert("tls.crt")
    ca_usable = ca is not None and ca_key is not None and ca.public_key() == ca_key.public_key()
    ca_good = ca_usable and _fresh(ca, now)
    serving_good = (
        ca_good
        and serving is not None
        and ca is not None
        and _fresh(serving, now)
        and set(dns_names) <= _names(serving)
        and _signed_by(serving, ca)
        and current.key("tls.key") is not None
    )
    if serving_good:
        return None
    files: dict[str, bytes] = {}
    if ca_good and ca is not None and ca_key is not None:
        authority = certs.KeyPair(current.files["ca.crt"], current.files["ca.key"], ca_key, ca)
        if "ca-previous.crt" in current.files:
            files["ca-previous.crt"] = current.files["ca-previous.crt"]
    else:
        authority = certs.make_ca("ecr-pullthrough-webhook-ca", days=CA_DAYS)
        if ca_usable and ca is not None and now < ca.not_valid_after_utc:
            files["ca-previous.crt"] = current.files["ca.crt"]  # still trusted until it expires
    leaf = certs.make_leaf(authority, dns_names[0], dns_names=dns_names, days=SERVING_DAYS)
    files.update(
        {"ca.crt": authority.cert_pem, "ca.key": authority.key_pem, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
    )
    return Material(files)


def ca_bundle(material: Material, now: datetime.datetime) -> bytes:
    """The current CA, plus the previous one while it is still valid."""
    bundle = material.files["ca.crt"]
    previous = material.cert("ca-previous.crt")
    if previous is not None and now < previous.not_valid_after_utc:
        bundle += material.files["ca-previous.crt"]
    return bundle


class WebhookCertificates:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        secret: str,
        configuration: str,
        service: str,
        instance: str = "ecr-pullthrough",
    ) -> None:
        self.labels = {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: instance}
        # Any: plain dicts in and out, the typed signatures want the generated models.
        self.core: Any = client.CoreV1Api(api)
        self.admission: Any = client.AdmissionregistrationV1Api(api)
        self.namespace, self.secret, self.configuration = namespace, secret, configuration
        self.dns_names = (
            f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local",
            f"{service}.{namespace}",
        )

    def watches(self, due: threading.Event, stop: threading.Event, heartbeats: Heartbeats) -> list[ListWatch]:
        """Watches of the configuration and the Secret: any change of either makes a check `due` at once."""

        def changed(*_: object) -> None:
            due.set()

        def watch(name: str, list_fn: Callable[..., Any], field: str) -> ListWatch:
            return ListWatch(
                name,
                list_fn,
                changed,
                changed,
                stop,
                beat=lambda: heartbeats.beat(name, WATCH_MAX_SILENCE),
                field_selector=f"metadata.name={field}",
            )

        return [
            watch(
                "watch-webhook-configuration",
                self.admission.list_mutating_webhook_configuration,
                self.configuration,
            ),
            watch(
                "watch-webhook-tls",
                functools.partial(self.core.list_namespaced_secret, self.namespace),
                self.secret,
            ),
        ]

    def ensure(self, leading: Callable[[], bool] = lambda: True) -> None:
        """Renew what needs it and bring caBundle in step; raises ApiException on API failures.

        `leading` is asked again before each write: two replicas rotating at once would leave
        caBundle and the serving certificate from different authorities.
        """
        now = datetime.datetime.now(datetime.UTC)
        secret = self._read_secret()
        current = Material.from_secret(secret)
        renewed = plan(current, self.dns_names, now)
        material = renewed or current
        configuration = body(
            self.admission.read_mutating_webhook_configuration(
                self.configuration, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        # caBundle first: the API server must trust a new CA before the webhook serves a certificate it signed.
        if not leading():
            return
        self._ensure_bundle(configuration, ca_bundle(material, now))
        if renewed is not None and leading():
            self._write_secret(secret, renewed, configuration)
            log.info(
                "webhook serving certificate renewed",
                extra={
                    "fields": {"secret": self.secret, "newCA": renewed.files["ca.crt"] != current.files.get("ca.crt")}
                },
            )

    def _read_secret(self) -> dict[str, Any] | None:
        try:
            return body(
                self.core.read_namespaced_secret(
                    self.secret, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _ensure_bundle(self, configuration: dict[str, Any], bundle: bytes) -> None:
        encoded = base64.b64encode(bundle).decode()
        webhooks = configuration.get("webhooks") or []
        if all((w.get("clientConfig") or {}).get("caBundle") == encoded for w in webhooks):
            return
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = encoded
        self.admission.replace_mutating_webhook_configuration(
            self.configuration, configuration, _request_timeout=REQUEST_TIMEOUT
        )
        log.info("webhook caBundle updated", extra={"fields": {"configuration": self.configuration}})

    def _write_secret(self, secret: dict[str, Any] | None, material: Material, owner: dict[str, Any]) -> None:
        data = {key: base64.b64encode(value).decode() for key, value in material.files.items()}
        if secret is None:
            metadata = owner["metadata"]
            new = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": self.secret,
                    "namespace": self.namespace,
                    "labels": dict(self.labels),
                    # Garbage-collected with the webhook configuration on `helm uninstall`.
                    "ownerReferences": [
                        {
                            "apiVersion": "admissionregistration.k8s.io/v1",
                            "kind": "MutatingWebhookConfiguration",
                            "name": metadata["name"],
                            "uid": metadata["uid"],
                        }
                    ],
                },
                "data": data,
            }
            self.core.create_namespaced_secret(self.namespace, new, _request_timeout=REQUEST_TIMEOUT)
        else:
            secret["data"] = data
            metadata = secret.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **self.labels}  # adopts a 0.1.0 Secret
            self.core.replace_namespaced_secret(self.secret, self.namespace, secret, _request_timeout=REQUEST_TIMEOUT)
