"""Container image references, parsed and normalised exactly as Docker does.

The grammar and the normalisation rules (`ParseNormalizedNamed`) are those of
the distribution project's `reference` package, as ported by docker-image-py;
this module only gives them a small typed surface. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from docker_image import digest as _digest
from docker_image import reference as _distribution

DOCKER_HUB = "docker.io"
# Hosts that serve Docker Hub. The library normalises only `index.docker.io`;
# `registry-1.docker.io` is the registry API host itself (and the upstream URL
# an ECR pull-through rule names), so it is Docker Hub too.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# The reference grammar limits the repository path (the domain does not count).
MAX_PATH_LENGTH = 255


class InvalidReferenceError(ValueError):
    """The string is not a valid image reference."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalised reference: `docker.io/library/nginx:1.27`, never `nginx:1.27`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def is_docker_hub(self) -> bool:
        return self.domain.lower() in DOCKER_HUB_ALIASES

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"


def parse(image: str) -> ImageReference:
    """Parse and normalise `image`; raise InvalidReferenceError with the grammar's reason."""
    if not isinstance(image, str):
        raise InvalidReferenceError(f"an image reference is a string, not {type(image).__name__}")
    return _parse(image)


# Pods repeat the same few images endlessly: parsing each once is worth a cache.
@lru_cache(maxsize=8192)
def _parse(image: str) -> ImageReference:
    try:
        parsed = _distribution.Reference.parse_normalized_named(image)
    except (_distribution.InvalidReference, _digest.InvalidDigest, _digest.DigestUnsupported) as error:
        raise InvalidReferenceError(str(error) or type(error).__name__) from None
    domain, path = parsed.split_hostname()
    if domain.lower() in DOCKER_HUB_ALIASES and "/" not in path:
        # Official images live under `library/` whichever Docker Hub host is named.
        path = f"library/{path}"
    return ImageReference(domain=domain, path=path, tag=parsed.get("tag"), digest=parsed.get("digest"))
