"""Conformance of image reference parsing with the distribution project's `reference` package.

Most vectors come from distribution's own tests (reference_test.go, normalize_test.go,
regexp_test.go); each row is what `ParseNormalizedNamed` returns, or that it fails.
"""

import pytest

from webhook.core import images

HEX64 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
SHA256 = f"sha256:{HEX64}"
SHA512 = "sha512:" + "f" * 128
HUB = "docker.io"

VALID: list[tuple[str, tuple[str, str, str | None, str | None]]] = [
    # Docker Hub normalisation
    ("ubuntu", (HUB, "library/ubuntu", None, None)),
    ("ubuntu:22.04", (HUB, "library/ubuntu", "22.04", None)),
    ("library/ubuntu", (HUB, "library/ubuntu", None, None)),
    ("docker.io/ubuntu", (HUB, "library/ubuntu", None, None)),
    ("docker.io/library/ubuntu", (HUB, "library/ubuntu", None, None)),
    ("index.docker.io/ubuntu", (HUB, "library/ubuntu", None, None)),
    ("index.docker.io/library/ubuntu:latest", (HUB, "library/ubuntu", "latest", None)),
    ("registry-1.docker.io/nginx", ("registry-1.docker.io", "library/nginx", None, None)),
    ("registry-1.docker.io/bitnami/redis:7.2", ("registry-1.docker.io", "bitnami/redis", "7.2", None)),
    ("bitnami/redis:7.2", (HUB, "bitnami/redis", "7.2", None)),
    ("a/b/c/d:e", (HUB, "a/b/c/d", "e", None)),
    ("test_com", (HUB, "library/test_com", None, None)),
    # a name without a slash never has a domain: `:5000` is a tag
    ("test.com:tag", (HUB, "library/test.com", "tag", None)),
    ("test.com:5000", (HUB, "library/test.com", "5000", None)),
    ("foo:5000", (HUB, "library/foo", "5000", None)),
    ("foo_bar.com:8080", (HUB, "library/foo_bar.com", "8080", None)),
    ("foo/foo_bar.com:8080", (HUB, "foo/foo_bar.com", "8080", None)),
    ("192.168.1.1", (HUB, "library/192.168.1.1", None, None)),
    ("192.168.1.1:5000", (HUB, "library/192.168.1.1", "5000", None)),
    # domains: a dot, a colon, localhost, or an uppercase letter in the first component
    ("test.com/repo:tag", ("test.com", "repo", "tag", None)),
    ("test:5000/repo", ("test:5000", "repo", None, None)),
    ("test:5000/repo:tag", ("test:5000", "repo", "tag", None)),
    (f"test:5000/repo@{SHA256}", ("test:5000", "repo", None, SHA256)),
    (f"test:5000/repo:tag@{SHA256}", ("test:5000", "repo", "tag", SHA256)),
    ("localhost/ubuntu", ("localhost", "ubuntu", None, None)),
    ("localhost:5000/ubuntu:1", ("localhost:5000", "ubuntu", "1", None)),
    ("Foo/bar", ("Foo", "bar", None, None)),
    ("EXAMPLE.com/app", ("EXAMPLE.com", "app", None, None)),
    ("192.168.1.1/repo", ("192.168.1.1", "repo", None, None)),
    ("192.168.1.1:5000/repo", ("192.168.1.1:5000", "repo", None, None)),
    ("sub-dom1.foo.com/bar/baz/quux", ("sub-dom1.foo.com", "bar/baz/quux", None, None)),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None)),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        ("b.gcr.io", "test.example.com/my-app", "test.example.com", None),
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", ("xn--n3h.com", "myimage", "xn--n3h.com", None)),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}", ("xn--7o8h.com", "myimage", "xn--7o8h.com", SHA512)),
    # IPv6 domains
    ("[2001:db8::1]/repo", ("[2001:db8::1]", "repo", None, None)),
    ("[2001:db8::1]:5000/repo", ("[2001:db8::1]:5000", "repo", None, None)),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", ("[2001:db8:1:2:3:4:5:6]", "repo", "tag", None)),
    (f"[2001:db8::1]:5000/repo:tag@{SHA256}", ("[2001:db8::1]:5000", "repo", "tag", SHA256)),
    ("[::1]:5000/foo", ("[::1]:5000", "foo", None, None)),
    # separators: `.`, `_`, `__`, runs of `-`
    ("foo__bar/baz", (HUB, "foo__bar/baz", None, None)),
    ("foo_bar/baz.qux", (HUB, "foo_bar/baz.qux", None, None)),
    ("foo--bar/a---b", (HUB, "foo--bar/a---b", None, None)),
    ("ghcr.io/a-b_c.d/e__f", ("ghcr.io", "a-b_c.d/e__f", None, None)),
    # tags keep their case; digests with and without tags
    ("lowercase:Uppercase", (HUB, "library/lowercase", "Uppercase", None)),
    ("foo/bar:TAG_Upper", (HUB, "foo/bar", "TAG_Upper", None)),
    ("foo:_leading_underscore", (HUB, "library/foo", "_leading_underscore", None)),
    ("foo:" + "t" * 128, (HUB, "library/foo", "t" * 128, None)),
    (f"nginx@{SHA256}", (HUB, "library/nginx", None, SHA256)),
    (f"nginx:1.27@{SHA256}", (HUB, "library/nginx", "1.27", SHA256)),
    (f"quay.io/org/app@{SHA512}", ("quay.io", "org/app", None, SHA512)),
    # the 255-character path limit: exactly 255 passes
    ("a/" * 127 + "a:tag-puts-this-over-max", (HUB, "a/" * 127 + "a", "tag-puts-this-over-max", None)),
    ("registry.k8s.io/pause:3.10", ("registry.k8s.io", "pause", "3.10", None)),
    ("public.ecr.aws/docker/library/redis:7", ("public.ecr.aws", "docker/library/redis", "7", None)),
]

INVALID: list[str] = [
    "",
    ":justtag",
    f"@{SHA256}",
    "Uppercase:tag",
    "Nginx",
    "docker.io/Nginx",
    "foo/Bar",
    "test:5000/Uppercase/lowercase:tag",
    "a/" * 128 + "a:tag",  # path of 257 characters
    "aa/asdf$$^/aa",
    "foo___bar",
    "foo-_-bar/baz",
    "foo.-bar",
    "-foo",
    "foo-",
    "foo.",
    "foo:",
    "foo@",
    "foo:.bar",
    "foo:-bar",
    "foo:" + "t" * 129,
    "foo@sha256:abc",
    f"validname@invaliddigest:{HEX64}",
    "[2001:db8::1]",
    "[2001:db8::1]:tag",
    "[fe80::1%eth0]:5000/repo",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "foo bar",
    "foo//bar",
    "/foo",
    "ünïcode",
]


@pytest.mark.parametrize(("image", "expected"), VALID, ids=[case[0][:60] for case in VALID])
def test_valid_references_normalise_as_docker_does(
    image: str, expected: tuple[str, str, str | None, str | None]
) -> None:
    parsed = images.parse(image)
    assert (parsed.domain, parsed.path, parsed.tag, parsed.digest) == expected


@pytest.mark.parametrize("image", INVALID, ids=[case[:60] or "empty" for case in INVALID])
def test_invalid_references_are_rejected_with_a_reason(image: str) -> None:
    with pytest.raises(images.InvalidReferenceError) as error:
        images.parse(image)
    assert str(error.value)


def test_the_table_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 60


def test_string_form_keeps_tag_and_digest_and_adds_no_latest() -> None:
    assert str(images.parse("nginx")) == "docker.io/library/nginx"
    assert str(images.parse(f"nginx:1.27@{SHA256}")) == f"docker.io/library/nginx:1.27@{SHA256}"


def test_docker_hub_hosts_are_recognised_case_insensitively() -> None:
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io", "Registry-1.Docker.IO"):
        assert images.parse(f"{host}/foo/bar").is_docker_hub
    assert not images.parse("ghcr.io/foo/bar").is_docker_hub


def test_non_strings_are_invalid() -> None:
    with pytest.raises(images.InvalidReferenceError):
        images.parse(None)  # type: ignore[arg-type]
