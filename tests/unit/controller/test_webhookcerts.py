import datetime

from cryptography import x509

from webhook import certs
from webhook.controller.webhookcerts import Material, ca_bundle, plan

NAMES = ("hook.ns.svc", "hook.ns.svc.cluster.local", "hook.ns")
NOW = datetime.datetime.now(datetime.UTC)


def material(ca: certs.KeyPair, leaf: certs.KeyPair) -> Material:
    return Material({"ca.crt": ca.cert_pem, "ca.key": ca.key_pem, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem})


def sans(pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem)
    return set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def test_nothing_yet_means_a_new_ca_and_certificate_for_the_service() -> None:
    created = plan(Material({}), NAMES, NOW)
    assert created is not None
    assert sans(created.files["tls.crt"]) == set(NAMES)
    leaf = x509.load_pem_x509_certificate(created.files["tls.crt"])
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(created.files["ca.crt"]))
    assert "ca-previous.crt" not in created.files
    assert plan(created, NAMES, NOW) is None, "a fresh pair is left alone"


def test_a_serving_certificate_near_its_end_is_renewed_with_the_same_ca() -> None:
    ca = certs.make_ca(days=3650)
    old = certs.make_leaf(ca, NAMES[0], dns_names=NAMES, days=1)
    assert plan(material(ca, old), NAMES, NOW) is None, "two thirds of its life are left"
    renewed = plan(material(ca, old), NAMES, NOW + datetime.timedelta(hours=20))
    assert renewed is not None
    assert renewed.files["ca.crt"] == ca.cert_pem, "same CA: caBundle need not change"
    assert renewed.files["tls.crt"] != old.cert_pem
    assert ca_bundle(renewed, NOW) == ca.cert_pem


def test_a_certificate_for_other_names_is_replaced() -> None:
    ca = certs.make_ca()
    wrong = certs.make_leaf(ca, "other.svc", dns_names=("other.svc",))
    renewed = plan(material(ca, wrong), NAMES, NOW)
    assert renewed is not None
    assert sans(renewed.files["tls.crt"]) == set(NAMES)


def test_a_ca_near_its_end_is_replaced_and_the_old_one_stays_trusted_meanwhile() -> None:
    ca = certs.make_ca(days=30)
    leaf = certs.make_leaf(ca, NAMES[0], dns_names=NAMES, days=20)
    rotated = plan(material(ca, leaf), NAMES, NOW + datetime.timedelta(days=25))
    assert rotated is not None
    assert rotated.files["ca.crt"] != ca.cert_pem
    assert rotated.files["ca-previous.crt"] == ca.cert_pem
    assert ca_bundle(rotated, NOW) == rotated.files["ca.crt"] + ca.cert_pem
    assert ca_bundle(rotated, NOW + datetime.timedelta(days=40)) == rotated.files["ca.crt"], "expired: dropped"


def test_garbage_in_the_secret_is_replaced() -> None:
    assert plan(Material({"ca.crt": b"junk", "tls.crt": b"junk"}), NAMES, NOW) is not None
