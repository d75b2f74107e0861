"""Container image references, parsed and normalised as Docker reads them, in linear time.

A port of `ParseNormalizedNamed` from the distribution project's `reference`
package (v0.6.0: `normalize.go`, `reference.go`, `regexp.go`) and of the digest
check of `opencontainers/go-digest`, which Docker, containerd and the kubelet
all use. Go's patterns are anchored and run in linear time; Python's `re`
backtracks, so instead of porting the nested patterns this module splits the
string at the characters the grammar reserves (`@`, `/`, `:`, `.`) and checks
each part with a flat pattern. Every length is bounded before any pattern runs.
`tests/unit/core/test_images_differential.py` compares it with the Go package.

Intentional differences from Go (each tested):
- `registry-1.docker.io` is Docker Hub (it is Hub's registry host, and the
  upstream an ECR pull-through rule names): normalised to `docker.io`, with
  `library/` for official images.
- Bounds Go does not have: a host of at most 253 characters and a port of at
  most 5 digits. (Go bounds the path to 255; a tag is at most 128 characters
  and a digest at most sha512's length in both.)

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DOCKER_HUB = "docker.io"
# `index.docker.io` is Docker's legacy name for Hub; Go normalises it. Both are
# compared exactly, as Go and containerd do: `DOCKER.IO` is another registry.
LEGACY_DOCKER_HUB = "index.docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, LEGACY_DOCKER_HUB, DOCKER_HUB_REGISTRY})
OFFICIAL_PREFIX = "library/"

# Bounds, checked before any pattern runs.
MAX_HOST_LENGTH = 253  # a DNS name (RFC 1035); an IPv6 literal with brackets is shorter
MAX_PORT_DIGITS = 5
MAX_PATH_LENGTH = 255  # distribution's RepositoryNameTotalLengthMax
MAX_TAG_LENGTH = 128  # `[\w][\w.-]{0,127}`
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}  # hex characters; go-digest's registered algorithms
MAX_DIGEST_LENGTH = len("sha512:") + DIGEST_LENGTHS["sha512"]
# host:port / path : tag @ digest
MAX_REFERENCE_LENGTH = (
    MAX_HOST_LENGTH + 1 + MAX_PORT_DIGITS + 1 + MAX_PATH_LENGTH + 1 + MAX_TAG_LENGTH + 1 + MAX_DIGEST_LENGTH
)

# Flat patterns only: no quantifier over a group that can itself repeat.
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")  # `-` and alnum never overlap a `.`
_IPV6 = re.compile(r"\[[a-fA-F0-9:]+\]")
_PORT = re.compile(r"[0-9]+")
_PATH_RUN = re.compile(r"[a-z0-9]+|[._-]+")
_PATH_SEPARATORS = frozenset({".", "_", "__"})  # or any run of `-`
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # `\w` is ASCII in Go
_DIGEST_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")  # parts cannot overlap
_HEX = re.compile(r"[0-9a-fA-F]*")
_LOWER_HEX = re.compile(r"[0-9a-f]*")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


class InvalidReferenceError(ValueError):
    """The string is not a valid image reference."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalised reference: `docker.io/library/nginx:1.27`, never `nginx:1.27`.

    `domain` is empty only for the rare name Go accepts without one (`a_b.com/x`:
    the first component is not a valid host, but the whole is a valid path).
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def is_docker_hub(self) -> bool:
        return self.domain == DOCKER_HUB

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"


def parse(image: str) -> ImageReference:
    """Parse and normalise `image`; raise InvalidReferenceError with the reason.

    The reason never quotes the input: an invalid image may be 200 KB long.
    """
    if not isinstance(image, str):
        raise InvalidReferenceError(f"an image reference is a string, not {type(image).__name__}")
    if len(image) > MAX_REFERENCE_LENGTH:
        raise InvalidReferenceError(f"longer than {MAX_REFERENCE_LENGTH} characters ({len(image)})")
    return _parse(image)


# Pods repeat the same few images endlessly: parsing each once is worth a cache,
# and the length bound above keeps its memory bounded.
@lru_cache(maxsize=8192)
def _parse(image: str) -> ImageReference:
    if _IMAGE_ID.fullmatch(image):
        raise InvalidReferenceError("a 64-character hexadecimal string is an image id, not a reference")
    domain, remainder = _split_docker_domain(image)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise InvalidReferenceError("the repository name must be lowercase")
    return _parse_named(domain, remainder)


def _split_docker_domain(image: str) -> tuple[str, str]:
    """distribution's splitDockerDomain, plus registry-1.docker.io as Docker Hub."""
    first, slash, rest = image.partition("/")
    if not slash:
        return DOCKER_HUB, OFFICIAL_PREFIX + image
    if first in (LEGACY_DOCKER_HUB, DOCKER_HUB_REGISTRY):
        domain, remainder = DOCKER_HUB, rest
    elif first == "localhost" or "." in first or ":" in first or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DOCKER_HUB, image
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def _parse_named(domain: str, remainder: str) -> ImageReference:
    """distribution's Parse(domain + "/" + remainder), split at the reserved characters."""
    name, at, digest = f"{domain}/{remainder}".partition("@")
    if at:
        _check_digest(digest)
    # A tag has no `/` and a path no `:`: a `:` after the last `/` starts the tag.
    head, _, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    name = f"{head}/{last}"
    if colon and not (len(tag) <= MAX_TAG_LENGTH and _TAG.fullmatch(tag)):
        raise InvalidReferenceError("invalid tag: at most 128 of A-Z a-z 0-9 _ . -, not starting with . or -")
    # Go's optional domain is greedy: the first component is the domain if it is one and the rest is a path.
    first, _, rest = name.partition("/")
    if _is_domain(first) and _is_path(rest):
        found_domain, path = first, rest
    elif _is_path(name):
        found_domain, path = "", name
    else:
        raise InvalidReferenceError("invalid reference format")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidReferenceError(f"the repository path is longer than {MAX_PATH_LENGTH} characters")
    return ImageReference(found_domain, path, tag if colon else None, digest if at else None)


def _is_domain(domain: str) -> bool:
    """`host[:port]`, the host a DNS name or a bracketed IPv6 literal."""
    if domain.startswith("["):
        end = domain.find("]") + 1
        host, rest = domain[:end], domain[end:]
        valid_host = 0 < end <= MAX_HOST_LENGTH and _IPV6.fullmatch(host) is not None
    else:
        colon = domain.find(":")
        host, rest = (domain, "") if colon < 0 else (domain[:colon], domain[colon:])
        valid_host = len(host) <= MAX_HOST_LENGTH and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))
    if not valid_host:
        return False
    if not rest:
        return True
    port = rest[1:]
    return rest[0] == ":" and len(port) <= MAX_PORT_DIGITS and _PORT.fullmatch(port) is not None


def _is_path(path: str) -> bool:
    return bool(path) and all(_is_path_component(component) for component in path.split("/"))


def _is_path_component(component: str) -> bool:
    """`[a-z0-9]+` runs joined by `.`, `_`, `__` or any run of `-`."""
    runs = _PATH_RUN.findall(component)
    if "".join(runs) != component or not runs or not runs[0][0].isalnum() or not runs[-1][0].isalnum():
        return False
    return all(run[0].isalnum() or run in _PATH_SEPARATORS or set(run) == {"-"} for run in runs)


def _check_digest(digest: str) -> None:
    """go-digest's Parse: a registered algorithm and its exact count of lowercase hex digits."""
    if len(digest) > MAX_DIGEST_LENGTH:
        raise InvalidReferenceError(f"invalid digest: longer than {MAX_DIGEST_LENGTH} characters")
    algorithm, colon, encoded = digest.partition(":")
    # distribution's own digest pattern comes first: anything else is not a reference at all.
    if not (colon and len(encoded) >= 32 and _DIGEST_ALGORITHM.fullmatch(algorithm) and _HEX.fullmatch(encoded)):
        raise InvalidReferenceError("invalid digest: expected algorithm:hex with at least 32 hex digits")
    expected = DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReferenceError("unsupported digest algorithm (sha256, sha384 and sha512 are)")
    if len(encoded) != expected:
        raise InvalidReferenceError(f"invalid digest length: {algorithm} has {expected} hex digits")
    if not _LOWER_HEX.fullmatch(encoded):
        raise InvalidReferenceError("invalid digest: hex digits must be lowercase")
