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
    # registry-1.docker.io is Hub's registry host: Docker Hub too (an intentional difference from Go)
    ("registry-1.docker.io/nginx", (HUB, "library/nginx", None, None)),
    ("registry-1.docker.io/bitnami/redis:7.2", (HUB, "bitnami/redis", "7.2", None)),
    # hosts compare exactly, as Go and containerd do: an upper-case Hub name is another registry
    ("DOCKER.IO/nginx", ("DOCKER.IO", "nginx", None, None)),
    ("DOCKER.Io/library/nginx", ("DOCKER.Io", "library/nginx", None, None)),
    ("Index.Docker.io/nginx", ("Index.Docker.io", "nginx", None, None)),
    # the first component is no valid host, but the whole is a valid path: Go accepts it without a domain
    ("a_b.com/foo", ("", "a_b.com/foo", None, None)),
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
    # Go's `$` is the end of the text; Python's also matches before a final newline
    "nginx\n",
    "nginx:1.27\n",
    " nginx",
    "nginx\t",
    # go-digest: only sha256, sha384 and sha512, with their exact count of lowercase hex digits
    "nginx@sha256:" + "F" * 64,
    "nginx@sha256:" + "f" * 63,
    "nginx@sha1:" + "f" * 40,
    "nginx@SHA256:" + "f" * 64,
    # the bounds Go does not have: a host of 253 characters, a port of 5 digits
    "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "/x",
    "example.com:123456/x",
    # over-long near-misses are refused at once, before any pattern runs
    "a-" * 15000 + "a.com:/x",
    "a" * 100_000,
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


def test_docker_hub_hosts_are_recognised_exactly() -> None:
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert images.parse(f"{host}/foo/bar").is_docker_hub
        assert images.parse(f"{host}/foo/bar").name == "docker.io/foo/bar"
    for host in ("DOCKER.IO", "Docker.io", "Registry-1.Docker.IO", "INDEX.DOCKER.IO", "ghcr.io"):
        assert not images.parse(f"{host}/foo/bar").is_docker_hub


def test_every_bound_at_once_is_valid() -> None:
    host = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    path = "/".join(["p" * 127, "q" * 127])  # 255 characters
    image = f"{host}:65535/{path}:{'t' * 128}@{SHA512}"
    assert len(image) == images.MAX_REFERENCE_LENGTH
    parsed = images.parse(image)
    assert (parsed.domain, parsed.path, parsed.tag, parsed.digest) == (f"{host}:65535", path, "t" * 128, SHA512)


def test_non_strings_are_invalid() -> None:
    with pytest.raises(images.InvalidReferenceError):
        images.parse(None)  # type: ignore[arg-type]
