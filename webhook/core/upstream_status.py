"""The upstream status document: which upstreams the controller verified, why not, and when.

The controller publishes it in a ConfigMap; the webhook reads it from the
mounted file and rewrites an upstream's images only while it is verified.
Unknown status (no document, unreadable, stale) means "do not rewrite".

An entry is bound to what it verified: the registry and the prefix. The webhook
trusts an entry only when both equal its own settings, so a `helm upgrade` that
changes either never rides on a verification made for the old target. The
document stays at version 1 and its fields are only ever added: a reader
ignores keys it does not know, so old and new pods read each other's documents
during a rolling upgrade (an entry without a registry, written before it was
recorded, is not trusted by a reader that checks it).
Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DOCUMENT_KEY = "status.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    upstream: str  # the registry host as the webhook names it: docker.io, ghcr.io, ...
    prefix: str
    verified: bool
    reason: str  # one sentence: what is wrong and what to fix ("" when verified)
    checked_at: datetime.datetime
    registry: str  # the ECR registry host the verification was made against ("" in documents written before 0.2.0)


@dataclass(frozen=True, slots=True)
class StatusDocument:
    checked_at: datetime.datetime
    upstreams: tuple[UpstreamStatus, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": VERSION,
                "checkedAt": self.checked_at.isoformat(),
                "upstreams": {
                    s.upstream: {
                        "prefix": s.prefix,
                        "registry": s.registry,
                        "verified": s.verified,
                        "reason": s.reason,
                        "checkedAt": s.checked_at.isoformat(),
                    }
                    for s in self.upstreams
                },
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def parse(cls, text: str) -> StatusDocument:
        """Raise ValueError with a reason when `text` is not a status document."""
        try:
            raw: Any = json.loads(text)
            if raw.get("version") != VERSION:
                raise ValueError(f"unknown status document version {raw.get('version')!r}")
            statuses = tuple(
                UpstreamStatus(
                    upstream=str(upstream),
                    prefix=str(entry["prefix"]),
                    verified=entry["verified"] is True,
                    reason=str(entry.get("reason", "")),
                    checked_at=_time(entry["checkedAt"]),
                    registry=str(entry.get("registry", "")),
                )
                for upstream, entry in raw["upstreams"].items()
            )
            return cls(checked_at=_time(raw["checkedAt"]), upstreams=statuses)
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not an upstream status document: {error}") from None


def _time(value: Any) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return moment


@dataclass(frozen=True, slots=True)
class Verification:
    """What the webhook may rewrite right now: the verified upstreams, and why the others are not."""

    verified: frozenset[str]
    reasons: dict[str, str]
    unknown: str = ""  # set when there is no usable document at all

    def reason_for(self, upstream: str) -> str:
        if self.unknown:
            return self.unknown
        return self.reasons.get(upstream) or f"{upstream} is not in the upstream status"


@dataclass(frozen=True, slots=True)
class Target:
    """What the reader's own settings say must have been verified: its registry, and a prefix per upstream."""

    registry: str
    prefixes: Mapping[str, str] = field(default_factory=dict)  # upstream (docker.io, ghcr.io, ...) -> prefix

    def mismatch(self, status: UpstreamStatus) -> str | None:
        """Why `status` says nothing about this target, or None when it is about this target."""
        wanted = self.prefixes.get(status.upstream)
        here = f"{self.registry}/{wanted}" if wanted is not None else self.registry
        waiting = f"waiting for the controller to verify {status.upstream} through {here}"
        verified = f"the upstream status verified {status.upstream}"
        if not status.registry:
            return (
                "the upstream status does not name the registry it verified "
                f"(written by an older controller): {waiting}"
            )
        if status.registry != self.registry:
            return f"{verified} for the registry {status.registry}, not {self.registry}: {waiting}"
        if wanted is not None and status.prefix != wanted:
            return f"{verified} under the prefix {status.prefix}, not {wanted}: {waiting}"
        return None


def verification(
    document: StatusDocument | None,
    now: datetime.datetime,
    max_age: datetime.timedelta,
    problem: str = "",
    *,
    target: Target | None = None,
) -> Verification:
    """The upstreams to trust at `now`: none when the document is missing, unreadable or stale.

    With `target`, an entry is trusted only when it was verified for that registry and prefix.
    """
    if document is None:
        return Verification(frozenset(), {}, problem or "no upstream status yet")
    age = now - document.checked_at
    if age > max_age:
        return Verification(frozenset(), {}, f"upstream status is stale: last checked {int(age.total_seconds())}s ago")
    verified: set[str] = set()
    reasons: dict[str, str] = {}
    for status in document.upstreams:
        mismatch = target.mismatch(status) if target is not None else None
        if mismatch is not None:
            reasons[status.upstream] = mismatch
        elif status.verified:
            verified.add(status.upstream)
        else:
            reasons[status.upstream] = status.reason
    return Verification(verified=frozenset(verified), reasons=reasons)
